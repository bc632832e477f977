"""PyInstaller hooks for apps that embed granite-rt, found through the ``pyinstaller40`` entry point
(``pyproject.toml``), so a plain ``pyinstaller app.py`` collects what the runtime needs (docs/desktop.md)."""

from __future__ import annotations

from pathlib import Path


def get_hook_dirs() -> list[str]:
    """The folder of ``hook-granite_rt.py`` and ``hook-openvino.py`` (PyInstaller's entry-point API)."""
    return [str(Path(__file__).resolve().parent)]
