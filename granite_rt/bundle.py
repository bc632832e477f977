"""``granite-rt bundle``: a model folder cut down to what one placement loads, for shipping inside an app.

A bundle holds one artifact (the graph and its sidecars: an IR's .bin, ONNX external data), the tokenizer
and the config files the runtime reads (``model_folder.META_FILES``, the Pooling module's config), the
license files, and a ``granite_rt.json`` manifest in the export's format: only that artifact listed, plus
``bundle.files`` with the sha256 of every file in the folder. ``Embedder(bundle)`` loads it as any model
folder: offline (a folder is never looked up on the Hub), the artifact checked by the runtime's own
``verify_artifact``, every other file by ``verify_bundle``; asked for a placement it does not hold, the
error says what the bundle holds and how to make the other one.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from granite_rt import backends
from granite_rt.backends.base import Artifact
from granite_rt.errors import (BackendUnavailableError, BundleError, DeviceUnavailableError, GraniteRTError,
                               ModelFileError)
from granite_rt.staging import staged_folder
from granite_rt.model_folder import (MANIFEST, META_FILES, ModelSpec, load_spec, resolve_model,
                                     sha256_file, verify_artifact)

PRECISIONS = ("int8", "fp32", "fp16")  # stored precisions ("bf16" is computed from fp32, never stored)
# Shipped with the weights when the model folder has them (Apache-2.0 asks redistributors to include it).
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE", "NOTICE.txt", "README.md")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    """What ``bundle`` wrote: the folder, its one artifact and every file with its size."""

    folder: Path
    artifact: Artifact
    files: dict[str, int]          # relative path -> bytes, the manifest included

    @property
    def size(self) -> int:
        return sum(self.files.values())


def bundle(model: str | os.PathLike, out: str | os.PathLike, *, backend: str = "onnx",
           dtype: str = "int8") -> Bundle:
    """Copy what ``backend``/``dtype`` loads from ``model`` (folder or Hub id) into ``out``, with its manifest.

    ``out`` must not exist, be empty, or be a previous bundle (replaced); it is written atomically
    (a sibling staging folder renamed into place), so a failed run leaves nothing half-written.
    """
    backends.get(backend)  # BackendUnavailableError naming the registered backends
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(map(repr, PRECISIONS))} (the stored precision)")
    out = Path(out).expanduser()
    check_out(out)
    folder = resolve_model(model, backend=backend, dtype=dtype)
    spec = load_spec(folder)
    source_manifest = read_manifest(folder)
    artifact = _pick(spec, backend, dtype, model, exported=source_manifest is not None)
    parts = [p.relative_to(folder).as_posix() for p in verify_artifact(folder, artifact)]
    names = parts + [n for n in meta_files(folder) if n not in parts]
    with _staging(out) as stage:
        for rel in names:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, stage / rel)
        digests = {rel: sha256_file(stage / rel) for rel in names}
        source = str(folder) if Path(model).expanduser().is_dir() else str(model)  # a Hub id stays an id
        manifest = bundle_manifest(spec, source_manifest, artifact, digests, source, parts)
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        verify_bundle(stage)
    files = {rel: (out / rel).stat().st_size for rel in [*names, MANIFEST]}
    return Bundle(out, load_spec(out).artifacts[0], files)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """``granite_rt.json`` of ``folder`` (load_spec has checked it is valid JSON), None without one."""
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def meta_files(folder: Path) -> list[str]:
    """The non-artifact files of ``folder`` the runtime reads (and the license), those present."""
    names = [n for n in META_FILES if n != MANIFEST]
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8")) if (folder / "modules.json").is_file() else []
    names += [f"{m['path']}/config.json" for m in modules
              if str(m.get("type", "")).endswith("Pooling") and m.get("path")]
    names += LICENSE_FILES
    return list(dict.fromkeys(n for n in names if (folder / n).is_file()))


def bundle_manifest(spec: ModelSpec, source_manifest: dict[str, Any] | None, artifact: Artifact,
                    digests: dict[str, str], source: str, parts: list[str]) -> dict[str, Any]:
    """The export's manifest with only ``artifact`` listed (or one built from the spec for a folder without
    one, e.g. IBM's Hub layout), plus ``bundle``: the source and every file's sha256."""
    manifest = dict(source_manifest or {"format_version": FORMAT_VERSION, "kind": spec.kind,
                                      "max_seq_length": spec.max_length, "dim": spec.dim,
                                      "matryoshka_dims": list(spec.matryoshka_dims)})
    records = [a for a in (manifest.get("artifacts") or []) if a.get("path") == artifact.path]
    record = dict(records[0]) if records else {"path": artifact.path, "backend": artifact.backend,
                                               "precision": artifact.precision}
    record["files"] = {rel: digests[rel] for rel in parts}
    record["sha256"] = digests[artifact.path]
    manifest["artifacts"] = [record]
    manifest["bundle"] = {"source": source, "backend": artifact.backend, "precision": artifact.precision,
                          "files": dict(sorted(digests.items()))}
    return manifest


def bundle_info(folder: Path) -> dict[str, Any] | None:
    """The ``bundle`` entry of a bundle's manifest (source, backend, precision, files); None for other folders."""
    try:
        info = (read_manifest(folder) or {}).get("bundle")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def check_complete(spec: ModelSpec) -> None:
    """At load (no hashing: cold start): every file a bundle lists is present, so a deleted config cannot
    silently change the max length or pooling. ModelFileError naming the missing files."""
    info = bundle_info(spec.folder)
    if info is None:
        return
    missing = [rel for rel in info["files"] if not (spec.folder / rel).is_file()]
    if missing:
        raise ModelFileError(f"the bundle {spec.folder} is missing {', '.join(missing)} (listed in its {MANIFEST}); "
                             "make the bundle again with `granite-rt bundle`")


def verify_bundle(folder: Path) -> None:
    """Every file ``bundle.files`` lists is there with its sha256, and nothing else is (ModelFileError)."""
    spec = load_spec(folder)
    info = bundle_info(folder)
    if info is None:
        raise ModelFileError(f"{folder} is not a granite-rt bundle (its {MANIFEST} has no 'bundle' entry)")
    for rel, digest in info["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ModelFileError(f"{path} is missing from the bundle (listed in {MANIFEST})")
        if sha256_file(path) != digest:
            raise ModelFileError(f"{path} does not match the bundle's {MANIFEST}: the file was changed or "
                                 "corrupted; make the bundle again")
    verify_artifact(folder, spec.artifacts[0])


def explain_missing(exc: GraniteRTError, spec: ModelSpec, backend: str = "auto", dtype: str = "auto") -> GraniteRTError:
    """For a bundle that cannot open the asked placement: the same error, saying what the bundle holds and
    the command that makes the asked one."""
    info = bundle_info(spec.folder)
    if info is None or not isinstance(exc, (ModelFileError, DeviceUnavailableError, BackendUnavailableError)):
        return exc
    want_backend = backend if backend in (b.name for b in backends.registered()) else info["backend"]
    want_dtype = dtype if dtype in PRECISIONS else "fp32" if dtype in ("auto", "bf16") else info["precision"]
    return type(exc)(f"{exc}. {spec.folder} is a granite-rt bundle holding only {info['backend']} "
                     f"{info['precision']} ({spec.artifacts[0].path}): load it with backend='auto' or "
                     f"{info['backend']!r} and dtype='auto' or {info['precision']!r}, or bundle what you asked for: "
                     f"granite-rt bundle {info['source']} --out DIR --backend {want_backend} --dtype {want_dtype}")


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, holds something other than a previous bundle, or cannot be written."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not _previous_bundle(out):
        raise BundleError(f"--out {out} is not empty and is not a previous bundle; refusing to overwrite it "
                          "(choose a new or empty folder)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BundleError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BundleError(f"--out {out}: cannot write into {parent} (permission denied)")


def _previous_bundle(out: Path) -> bool:
    return bundle_info(out) is not None


def _pick(spec: ModelSpec, backend: str, dtype: str, model: Any, *, exported: bool) -> Artifact:
    for artifact in spec.artifacts:  # best first (canonical names before IBM's per-ISA variants)
        if artifact.backend == backend and artifact.precision == dtype:
            return artifact
    have = ", ".join(f"{a.backend} {a.precision} ({a.path})" for a in spec.artifacts) or "none"
    raise ModelFileError(f"{model} has no {backend} {dtype} model file to bundle; it has: {have}"
                         + ("; export it with `granite-rt export`" if exported else ""))


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """``staging.staged_folder`` with its creation failure as a one-line BundleError."""
    with ExitStack() as stack:
        try:
            stage = stack.enter_context(staged_folder(out))
        except OSError as err:
            raise BundleError(f"--out {out}: cannot create it ({err.strerror or err})") from None
        yield stage
