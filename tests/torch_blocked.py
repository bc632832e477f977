"""Run Python code in a fresh interpreter where torch, transformers, sentence-transformers and the export
stage cannot be imported, as on a user's machine with only ``pip install granite-rt``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCKED = ("torch", "transformers", "sentence_transformers", "optimum", "granite_export")



def blocker(modules: tuple[str, ...]) -> str:
    """Python code that makes ``modules`` (and their submodules) fail to import, as if not installed;
    importlib.util.find_spec answers None for them, as there (nncf probes for torch that way before importing)."""
    return f"""
import importlib.util, sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {modules!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked: the runtime must work without it", name=name)
        return None
sys.meta_path.insert(0, _Blocked())
_find_spec = importlib.util.find_spec
def _absent(name, package=None):
    return None if name.split(".")[0] in {modules!r} else _find_spec(name, package)
importlib.util.find_spec = _absent
"""


PRELUDE = blocker(BLOCKED)


def run_without_torch(code: str, cwd: Path | None = None, timeout: float = 300,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` after the import blocker; raises with the child's output when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torch-free child failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
