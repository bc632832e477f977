"""What ``scripts/setup.sh`` still has to install into the active venv; prints one line per item, nothing when done.

Checked without pip (pip takes seconds even when there is nothing to do): torch at the pinned version,
granite-rt installed editable from this checkout, from the pyproject.toml it was installed with (a hash
stamp in the venv), and every requirement of the extras present at a version that satisfies it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = Path(sys.prefix) / "granite-rt-setup.sha256"


def pyproject_digest() -> str:
    """What the install depends on: pyproject.toml and this check's inputs."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_todo(pin: str) -> list[str]:
    installed = _version("torch")
    if installed is not None and installed.split("+")[0] == pin:
        return []
    return [f"torch=={pin} (installed: {installed or 'none'})"]


def granite_rt_todo(extras: set[str]) -> list[str]:
    try:
        dist = metadata.distribution("granite-rt")
    except metadata.PackageNotFoundError:
        return ["granite-rt (not installed)"]
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if not (direct.get("dir_info") or {}).get("editable") or direct.get("url") != ROOT.as_uri():
        return [f"granite-rt (not an editable install of {ROOT})"]
    if not STAMP.is_file() or STAMP.read_text().strip() != pyproject_digest():
        return ["granite-rt (pyproject.toml changed since it was installed)"]
    return [f"{req} (for granite-rt)" for req in dist.requires or () if not _satisfied(req, extras)]


def _satisfied(requirement: str, extras: set[str]) -> bool:
    """A requirement of granite-rt's metadata that applies (base, or one of ``extras``) is installed at a fitting version."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging yet: only a fresh venv lacks it, and that installs everything anyway
        return False
    req = Requirement(requirement)
    if req.marker is not None and not any(req.marker.evaluate({"extra": extra}) for extra in extras):
        return True
    installed = _version(req.name)
    return installed is not None and req.specifier.contains(installed, prereleases=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--stamp"]:  # after a successful install
        STAMP.write_text(pyproject_digest() + "\n")
        return 0
    pin, extras = argv[0], set(argv[1].split(","))
    for line in torch_todo(pin) + granite_rt_todo(extras):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
