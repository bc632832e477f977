"""``granite_rt.json`` written by the runtime side: ``granite-rt manifest FOLDER`` (trust a folder's files as
they are now) and ``granite-rt quantize`` (add INT8 artifacts). The export stage writes a fuller manifest
(export/manifest.py) with the same artifact entries; the runtime reads ``kind`` and ``artifacts`` only.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from granite_rt.backends.base import Artifact
from granite_rt.model_folder import MANIFEST, artifact_files, load_spec, sha256_file

FORMAT_VERSION = 1


def artifact_entry(folder: Path, artifact: Artifact, **extra: Any) -> dict[str, Any]:
    """The manifest entry of an artifact as its files are now: path, backend, precision, sha256 of each file."""
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in artifact_files(folder, artifact)}
    entry: dict[str, Any] = {"path": artifact.path, "backend": artifact.backend, "precision": artifact.precision,
                             "files": files, "sha256": files[artifact.path]}
    if artifact.not_recommended:
        entry.update(recommended=False, not_recommended=artifact.not_recommended)
    entry.update(extra)
    return entry


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def trusted_manifest(folder: Path, written_by: str) -> dict[str, Any]:
    """A manifest listing every artifact of a folder without one, each file hashed as it is now."""
    spec = load_spec(folder)
    return {"format_version": FORMAT_VERSION, "kind": spec.kind, "source": str(folder),
            "written_by": f"{written_by} (granite-rt {_version()})",
            "artifacts": [artifact_entry(folder, a) for a in spec.artifacts]}


def upsert_artifacts(manifest: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``manifest`` with ``entries`` added, replacing any entry of the same path."""
    paths = {e["path"] for e in entries}
    manifest["artifacts"] = [a for a in manifest.get("artifacts", []) if a["path"] not in paths] + entries
    return manifest


def _version() -> str:
    try:
        return importlib.metadata.version("granite-rt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
