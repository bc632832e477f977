"""Run Python code in a fresh interpreter where torch, transformers, sentence-transformers and the export
stage cannot be imported, as on a user's machine with only ``pip install granite-rt``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCKED = ("torch", "transformers", "sentence_transformers", "optimum", "granite_export")

# Importing a blocked module raises ImportError; importlib.util.find_spec answers None for it, as where it is not
# installed (nncf and others probe for torch that way before importing it).
PRELUDE = f"""
import importlib.util, sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked: the runtime must work without it")
        return None
sys.meta_path.insert(0, _Blocked())
_find_spec = importlib.util.find_spec
def _absent(name, package=None):
    return None if name.split(".")[0] in {BLOCKED!r} else _find_spec(name, package)
importlib.util.find_spec = _absent
"""


def run_without_torch(code: str, cwd: Path | None = None, timeout: float = 300,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` after the import blocker; raises with the child's output when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torch-free child failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
