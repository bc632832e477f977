"""granite_rt/_pyinstaller: PyInstaller finds the hooks through the ``pyinstaller40`` entry point, and a
one-folder freeze of examples/desktop_app.py embeds text from a bundle with the network off.

One freeze per test session (ONNX only: ~35 s on 2 loaded cores); its executable runs with HF_HUB_OFFLINE
unset inside a network namespace without interfaces (``unshare -rn``) when the kernel allows one, else
with every HTTP(S) proxy pointed at a closed port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from granite_rt import Embedder
from granite_rt.bundle import bundle

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "desktop_app.py"
TEXT = "what is the chemical formula of water?"
pytest.importorskip("PyInstaller")


def test_the_hooks_are_registered_through_the_pyinstaller40_entry_point():
    dirs = [ep.load()() for ep in entry_points(group="pyinstaller40") if ep.value.startswith("granite_rt.")]
    assert len(dirs) == 1
    hooks = sorted(p.name for p in Path(dirs[0][0]).glob("hook-*.py"))
    assert hooks == ["hook-granite_rt.py", "hook-onnxruntime.py", "hook-openvino.py"]


def test_the_openvino_hook_collects_the_cpu_plugin_and_ir_frontend_next_to_libopenvino():
    pytest.importorskip("openvino")
    code = ("import runpy, json; from pathlib import Path; import granite_rt._pyinstaller as p; "
            "h = runpy.run_path(str(Path(p.get_hook_dirs()[0]) / 'hook-openvino.py')); "
            "print(json.dumps({'binaries': [b[0] for b in h['binaries']], 'dest': sorted({b[1] for b in h['binaries']}),"
            " 'datas': [d[0] for d in h['datas']]}))")
    result = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       timeout=120).stdout)
    names = {Path(b).name for b in result["binaries"]}
    assert {"libopenvino_intel_cpu_plugin.so", "libopenvino_ir_frontend.so"} <= {n.split(".so")[0] + ".so" for n in names}
    assert not any(f in n for n in names for f in ("pytorch_frontend", "tensorflow_frontend", "tensorflow_lite_frontend"))
    assert result["dest"] == ["openvino/libs"]  # where libopenvino looks for its plugins
    assert any("openvino-" in d and d.endswith(".dist-info") for d in result["datas"])


@pytest.fixture(scope="session")
def frozen_app(tmp_path_factory) -> tuple[Path, float]:
    """examples/desktop_app.py frozen one-folder, ONNX only; (executable, seconds the freeze took)."""
    work = tmp_path_factory.mktemp("freeze")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--onedir", "--log-level", "WARN",
                           "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
                           "--specpath", str(work), "--paths", str(ROOT),  # the editable install's finder is invisible to PyInstaller
                           "--exclude-module", "openvino", str(APP)],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work / "dist" / "desktop_app" / "desktop_app", time.perf_counter() - start


def _network_off() -> list[str]:
    """A command prefix that runs a program without any network, or [] when the kernel allows none."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def test_frozen_app_embeds_from_a_bundle_offline_like_the_runtime(frozen_app, exported_tiny_embedder, tmp_path):
    exe, freeze_s = frozen_app
    shipped = bundle(exported_tiny_embedder, tmp_path / "bundle").folder
    expected = Embedder(shipped).encode(TEXT)
    app = exe.parent
    internal = {p.name for p in (app / "_internal").iterdir()}
    assert "onnxruntime" in internal and "tokenizers" in internal
    assert not internal & {"torch", "transformers", "openvino", "huggingface_hub", "sklearn", "scipy"}
    prefix = _network_off()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONPATH")}
    if not prefix:  # no network namespace: every HTTP(S) client is pointed at a closed port instead
        env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    start = time.perf_counter()
    proc = subprocess.run([*prefix, str(exe), str(shipped), TEXT], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    run_s = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    vector = np.array(json.loads(proc.stdout))
    assert vector.shape == expected.shape
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    size_mb = sum(p.lstat().st_size for p in app.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    print(f"\nfrozen app: {size_mb:.0f} MB, freeze {freeze_s:.0f} s, run {run_s:.2f} s, "
          f"network {'off (unshare -rn)' if prefix else 'proxied to a closed port'}")


def test_frozen_app_reports_a_missing_bundle_in_one_line(frozen_app, tmp_path):
    exe, _ = frozen_app
    proc = subprocess.run([str(exe), str(tmp_path / "nowhere"), TEXT], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "nowhere' does not exist" in lines[0]
