"""scripts/setup.sh: a run after set-up installs nothing (no pip), and its check names what is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"


def _setup_check():
    spec = importlib.util.spec_from_file_location("setup_check", ROOT / "scripts" / "setup_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not VENV.is_dir() or Path(sys.prefix).resolve() != VENV.resolve(),
                    reason="only in the .venv that scripts/setup.sh made (bash scripts/test.sh)")
def test_setup_run_twice_installs_nothing_the_second_time():
    """Before: every run reinstalled the editable package (15-19 s of pip per demo run)."""
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr
    dist_info = next(Path(sys.prefix).glob("lib/python*/site-packages/granite_rt-*.dist-info"))
    record = (dist_info / "RECORD").stat().st_mtime_ns
    second = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stderr
    assert second.stderr.strip().splitlines() == [
        "setup: .venv is up to date (torch 2.13.0, granite-rt editable with export,openvino,server,ray,test): "
        "nothing to install"], second.stderr
    assert (dist_info / "RECORD").stat().st_mtime_ns == record  # pip did not reinstall granite-rt
    check = subprocess.run(["bash", "scripts/setup.sh", "--check"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert check.returncode == 0, check.stderr


def test_the_check_names_what_would_be_installed():
    check = _setup_check()
    assert check._satisfied("numpy>=1", {"test"})
    assert not check._satisfied('numpy>=999; extra == "test"', {"test"})       # too old for an extra we install
    assert check._satisfied('numpy>=999; extra == "gpu"', {"test"})            # an extra we do not install
    assert not check._satisfied("no-such-distribution-granite>=1", {"test"})   # not installed at all
    torch = check._version("torch")
    assert check.torch_todo("0.0.1") == [f"torch==0.0.1 (installed: {torch or 'none'})"]
