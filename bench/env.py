"""The Python environments contenders run in, and creating the bench ones on first use.

granite-rt and sentence-transformers on torch run in the project's venv (what a user installs).
The peers that pin older libraries get venvs of their own under bench/, each seeing the project's
site-packages after its own (torch, openvino, onnxruntime are shared, never re-downloaded):

- ``bench`` (bench/.venv): optimum-intel (sentence-transformers' openvino backend) and fastembed, which
  pin older transformers / huggingface-hub;
- ``st-onnx`` (bench/.venv-st-onnx): sentence-transformers' onnx backend, whose optimum-onnx requires
  transformers < 4.58, so sentence-transformers 5.x (the last series that runs on transformers 4);
- ``infinity`` (bench/.venv-infinity): the Infinity embedding server (infinity-emb), for bench.soak;
- ``llamacpp`` (bench/.venv-llamacpp): llama.cpp (llama-cpp-python, compiled here), gguf to write its files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PyPI's torchvision is built against the CUDA torch and breaks transformers' import beside the
# +cpu torch; optimum-intel declares it but never needs it for text models.
UNWANTED = ("torchvision",)


@dataclass(frozen=True)
class BenchEnv:
    """A venv for peers: its folder, its requirements file, and the project packages it must keep."""

    folder: Path
    requirements: Path
    keep: tuple[str, ...]   # installed at the project's versions (constraints), never re-resolved
    build_env: tuple[tuple[str, str], ...] = ()  # environment for pip, for requirements compiled from source

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"


ENVS = {
    "bench": BenchEnv(ROOT / "bench" / ".venv", ROOT / "bench" / "requirements.txt",
                      ("torch", "openvino", "sentence-transformers", "numpy")),
    "st-onnx": BenchEnv(ROOT / "bench" / ".venv-st-onnx", ROOT / "bench" / "requirements-st-onnx.txt",
                        ("torch", "onnxruntime", "numpy")),
    "infinity": BenchEnv(ROOT / "bench" / ".venv-infinity", ROOT / "bench" / "requirements-infinity.txt",
                         ("torch",)),
    "llamacpp": BenchEnv(ROOT / "bench" / ".venv-llamacpp", ROOT / "bench" / "requirements-llamacpp.txt",
                         ("numpy",), build_env=(
                             ("CMAKE_ARGS", "-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
                                            "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON"),
                             ("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1)))),
}


def _stamp(env: BenchEnv) -> str:
    build = repr(env.build_env).encode() if env.build_env else b""  # the other venvs keep their stamps
    return hashlib.sha256(env.requirements.read_bytes() + sys.executable.encode() + build).hexdigest()[:16]


def _pinned(*dists: str) -> list[str]:
    """``name==version`` of the project's installed ``dists``, so a bench venv keeps them."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in dists:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def ensure_env(name: str, log=print) -> Path:
    """Create the venv ``name`` of ``ENVS`` and install its requirements unless already up to date; its python."""
    env = ENVS[name]
    stamp_file = env.folder / "granite-rt-bench.stamp"
    if stamp_file.exists() and stamp_file.read_text() == _stamp(env):
        return env.python
    log(f"creating the {name} environment {env.folder} (once) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(env.folder)
    site = Path(subprocess.check_output(
        [str(env.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "zz_granite_rt_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    constraints = env.folder / "constraints.txt"
    constraints.write_text("\n".join(_pinned(*env.keep)) + "\n")
    pip = [str(env.python), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "-c", str(constraints), "-r", str(env.requirements)], check=True,
                   env={**os.environ, **dict(env.build_env)})
    subprocess.run([*pip, "uninstall", "-q", "-y", *UNWANTED], check=False)
    stamp_file.write_text(_stamp(env))
    return env.python
