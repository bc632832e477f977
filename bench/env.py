"""The two Python environments contenders run in, and creating the bench one on first use.

granite-rt and sentence-transformers on torch run in the project's venv (what a user installs);
optimum-intel (for sentence-transformers' openvino backend) and fastembed pin older
transformers / huggingface-hub, so they get bench/.venv, which sees the project's site-packages
after its own (torch, openvino and sentence-transformers are shared, never re-downloaded).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / "bench" / ".venv"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
# PyPI's torchvision is built against the CUDA torch and breaks transformers' import beside the
# +cpu torch; optimum-intel declares it but never needs it for text models.
UNWANTED = ("torchvision",)


def bench_python() -> Path:
    return BENCH_VENV / "bin" / "python"


def _stamp() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + sys.executable.encode()).hexdigest()[:16]


def _pinned(*dists: str) -> list[str]:
    """``name==version`` of the project's installed ``dists``, so the bench venv keeps them."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in dists:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def ensure_bench_env(log=print) -> Path:
    """Create bench/.venv and install bench/requirements.txt into it unless already up to date."""
    stamp_file = BENCH_VENV / "granite-rt-bench.stamp"
    if stamp_file.exists() and stamp_file.read_text() == _stamp():
        return bench_python()
    log(f"creating the bench environment {BENCH_VENV} (once) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(BENCH_VENV)
    site = Path(subprocess.check_output(
        [str(bench_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "zz_granite_rt_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    constraints = BENCH_VENV / "constraints.txt"
    constraints.write_text("\n".join(_pinned("torch", "openvino", "sentence-transformers", "numpy")) + "\n")
    pip = [str(bench_python()), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "-c", str(constraints), "-r", str(REQUIREMENTS)], check=True)
    subprocess.run([*pip, "uninstall", "-q", "-y", *UNWANTED], check=False)
    stamp_file.write_text(_stamp())
    return bench_python()
