"""Resolve a model (folder or Hub id) and read what the reference would read from it → ModelSpec.

Max length, pooling, normalisation and the cross-encoder activation are derived from the
sentence-transformers files and ``config.json`` exactly as sentence-transformers 6 derives them,
so a folder without our manifest (IBM's Hub layout) loads the same way as one we exported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from granite_rt import backends, host, hub
from granite_rt.backends.base import Artifact, BackendName, Precision
from granite_rt.errors import GraniteRTError, ModelFileError, UnsupportedModelError

Kind = Literal["embedder", "reranker"]
MANIFEST = "granite_rt.json"
# transformers' default model_max_length when tokenizer_config.json declares none.
_UNSET_MAX_LENGTH = int(1e30)
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
# CrossEncoder activation paths (config.json ``sentence_transformers.activation_fn``) we can apply.
_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Tanh": "tanh"}
# Files every backend needs besides the graph: tokenizer, configs, sentence-transformers modules.
META_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json", MANIFEST,
)
@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to know about a model folder, read once at load."""

    folder: Path
    kind: Kind
    artifacts: tuple[Artifact, ...]
    max_length: int
    hidden_size: int
    do_lower_case: bool = False
    truncation_side: str = "right"
    pooling: tuple[str, ...] = ("cls",)     # embedder: modes concatenated in this order
    normalize: bool = False                 # embedder: the pipeline has a Normalize module
    matryoshka_dims: tuple[int, ...] = ()
    num_labels: int = 1                     # reranker
    activation: str = "identity"            # reranker: what CrossEncoder.predict applies by default

    @property
    def dim(self) -> int:
        """Embedder: output dimension; reranker: number of labels."""
        return self.hidden_size * len(self.pooling) if self.kind == "embedder" else self.num_labels


def resolve_model(model: str | os.PathLike, backend: str = "auto", dtype: str = "auto",
                  revision: str | None = None) -> Path:
    """The local folder of ``model``: the folder itself, or a Hub snapshot of only the needed files."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if isinstance(model, str) and hub.is_hub_id(model):
        names, precisions = hub_wanted(backend, dtype)
        return fetch_from_hub(model, names, precisions, revision)
    raise hub.local_folder_error(model)


def hub_wanted(backend: str = "auto", dtype: str = "auto") -> tuple[tuple[BackendName, ...], tuple[Precision, ...]]:
    """Backends and stored precisions worth fetching, best first: the installed registered backends in the
    registry's order (what ``auto`` would pick), then fp32."""
    if backend == "auto":
        names = tuple(b.name for b in backends.registered()
                      if importlib.util.find_spec(b.engine) is not None) or ("onnx",)
    else:
        names = (backend,)
    stored = {"auto": ("int8", "fp32"), "bf16": ("fp32",), "int8+bf16": ("int8",)}
    return names, stored.get(dtype, (dtype,))


def hub_patterns(names: tuple[BackendName, ...], precisions: tuple[Precision, ...],
                 repo_files: list[str] | None = None) -> list[str]:
    """allow_patterns for snapshot_download: metadata plus the first wanted artifact the repo has.

    Without the repo's file list (offline) every wanted (backend, precision) pattern is allowed.
    """
    from fnmatch import fnmatch

    patterns = {(b, p): backends.get(b).hub_patterns(p) for p in precisions for b in names}
    wanted = [key for key, pats in patterns.items() if pats]
    if repo_files is not None:
        present = [key for key in wanted
                   if any(fnmatch(f, pat) for f in repo_files for pat in patterns[key]
                          if backends.get(key[0]).runs_here(f.rsplit("/", 1)[-1]))]
        wanted = present[:1] or wanted
    return list(META_FILES) + [pat for key in wanted for pat in patterns[key]]


def fetch_from_hub(repo_id: str, names: tuple[BackendName, ...], precisions: tuple[Precision, ...],
                   revision: str | None = None) -> Path:
    """Download (or find in the cache, when offline or unreachable) only the files the chosen backend needs."""
    found = hub.lookup(repo_id, revision)
    return hub.download(found, revision, allow_patterns=hub_patterns(names, precisions, found.files))


def load_spec(folder: Path) -> ModelSpec:
    """Read the manifest (when present), configs and sentence-transformers files of ``folder``."""
    manifest = _read_json(folder, MANIFEST) if (folder / MANIFEST).exists() else None
    config = _require_json(folder, "config.json")
    kind = (manifest or {}).get("kind") or _detect_kind(config)
    if kind not in ("embedder", "reranker"):
        raise UnsupportedModelError(f"{folder / MANIFEST}: unknown kind {kind!r} (expected embedder or reranker)")
    if not (folder / "tokenizer.json").is_file():
        raise ModelFileError(f"{folder / 'tokenizer.json'} is missing: granite-rt needs the fast tokenizer file")
    sbert = _read_json(folder, "sentence_bert_config.json") or {}
    tok_config = _read_json(folder, "tokenizer_config.json") or {}
    artifacts = _manifest_artifacts(manifest) if manifest else discover_artifacts(folder)
    if not artifacts:
        raise ModelFileError(f"{folder}: no model file found (expected onnx/model*.onnx or "
                             "openvino/openvino_model*.xml); export one with `granite-rt export`")
    common = dict(folder=folder, kind=kind, artifacts=artifacts,
                  max_length=reference_max_length(sbert, tok_config, config),
                  hidden_size=int(config.get("hidden_size") or config.get("d_model") or 0),
                  do_lower_case=bool(sbert.get("do_lower_case", False)),
                  truncation_side=str(tok_config.get("truncation_side", "right")))
    if kind == "reranker":
        return ModelSpec(**common, num_labels=_num_labels(config), activation=_activation(config))
    modules = _read_json(folder, "modules.json") or []
    pooling, hidden = _pooling(folder, modules, common["hidden_size"])
    st_config = _read_json(folder, "config_sentence_transformers.json") or {}
    dims = (manifest or {}).get("matryoshka_dims") or st_config.get("matryoshka_dims") or ()
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    return ModelSpec(**{**common, "hidden_size": hidden}, pooling=pooling, normalize=normalize, matryoshka_dims=tuple(int(d) for d in dims))


def reference_max_length(sbert: dict, tok_config: dict, config: dict) -> int:
    """The truncation length sentence-transformers' Transformer module ends up with.

    processor_kwargs/tokenizer_args model_max_length, else sentence_bert_config max_seq_length
    (both uncapped), else min(tokenizer_config model_max_length, config max_position_embeddings).
    """
    for key in ("processor_kwargs", "tokenizer_args"):
        explicit = (sbert.get(key) or {}).get("model_max_length")
        if explicit is not None:
            return int(explicit)
    if sbert.get("max_seq_length") is not None:
        return int(sbert["max_seq_length"])
    length = int(tok_config.get("model_max_length") or _UNSET_MAX_LENGTH)
    positions = config.get("max_position_embeddings")
    if positions is not None and positions != -1:
        length = min(length, int(positions))
    if length >= _UNSET_MAX_LENGTH:
        raise UnsupportedModelError("no max length: neither sentence_bert_config.json, tokenizer_config.json "
                                    "nor config.json (max_position_embeddings) declares one")
    return length


def discover_artifacts(folder: Path) -> tuple[Artifact, ...]:
    """Artifacts of a folder without manifest, each registered backend's files, best first within each precision."""
    return tuple(artifact for backend in backends.registered() for artifact in backend.discover(folder))


def artifact_files(folder: Path, artifact: Artifact) -> list[Path]:
    """The files an artifact consists of (its backend says: an IR's .bin, ONNX external data, ...)."""
    return backends.get(artifact.backend).files(folder, artifact)


def verify_artifact(folder: Path, artifact: Artifact) -> list[Path]:
    """Check that the artifact's files exist, are complete and match the manifest; return them."""
    files = artifact_files(folder, artifact)
    for path in files:
        if not path.is_file():
            raise ModelFileError(f"{path} is missing")
        if path.stat().st_size == 0:
            raise ModelFileError(f"{path} is empty (interrupted download or export?)")
    expected = dict(artifact.files)
    if artifact.sha256 and artifact.path not in expected:
        expected[artifact.path] = artifact.sha256
    where = {rel: MANIFEST for rel in expected}
    if not expected:  # no manifest: files from a Hugging Face cache carry the Hub's own hash
        for path in files:
            digest = hub_sha256(path)
            if digest is not None:
                rel = path.relative_to(folder).as_posix()
                expected[rel], where[rel] = digest, "the Hugging Face Hub's sha256 (LFS hash of its cache blob)"
    for rel, digest in expected.items():
        marker = _verified_marker(folder / rel, digest)
        if marker is not None and marker.is_file():
            continue
        actual = sha256_file(folder / rel)
        if actual != digest:
            raise ModelFileError(f"{folder / rel} does not match {where[rel]} (sha256 {actual[:12]}… != "
                                 f"{digest[:12]}…): the file is corrupted or was replaced; re-export or re-download it")
        _remember_verified(marker, folder / rel)
    backends.get(artifact.backend).check_files(files)
    return files


_SHA256 = re.compile(r"[0-9a-f]{64}")


def hub_sha256(path: Path) -> str | None:
    """The sha256 the Hugging Face Hub recorded for ``path``, where huggingface_hub's layout keeps it: a snapshot
    file is a link to ``blobs/<etag>``, and an LFS file's etag is its sha256 (file_download.py: "its git-sha1 if
    stored in git, or its sha256 if stored in git-lfs"); a ``local_dir`` download keeps the etag in
    ``.cache/huggingface/download/<path>.metadata``. None when neither applies (or the file is not LFS)."""
    if path.is_symlink():
        blob = path.resolve()
        if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
            return blob.name
        return None
    for parent in path.parents:
        metadata = parent / ".cache" / "huggingface" / "download" / (path.relative_to(parent).as_posix() + ".metadata")
        if metadata.is_file():
            lines = metadata.read_text(encoding="utf-8", errors="replace").splitlines()
            return lines[1].strip() if len(lines) > 1 and _SHA256.fullmatch(lines[1].strip()) else None
    return None


def verification(folder: Path, artifact: Artifact) -> str:
    """How ``verify_artifact`` checked the artifact's files, for ``info["verified"]``."""
    if artifact.sha256 or artifact.files:
        return f"sha256 of every file against {MANIFEST}"
    files = artifact_files(folder, artifact)
    hub_checked = [p for p in files if p.is_file() and hub_sha256(p) is not None]
    if hub_checked and len(hub_checked) == len(files):
        return "sha256 of every file against the Hugging Face Hub's (LFS hash in its cache)"
    if hub_checked:
        return (f"sha256 of {', '.join(p.name for p in hub_checked)} against the Hugging Face Hub's; "
                f"{', '.join(p.name for p in files if p not in hub_checked)} only for size")
    return (f"not verified: no {MANIFEST} and not from a Hugging Face cache; `granite-rt manifest {folder}` "
            "pins the files as they are now")


def _verified_marker(path: Path, digest: str) -> Path | None:
    """Where a passed check of ``path`` against ``digest`` is remembered: keyed by the file's identity and
    every stat field a write changes (size, mtime, ctime, inode), so a replaced or rewritten file is hashed
    again. None when the cache is off (GRANITE_RT_CACHE=off)."""
    cache = host.cache_dir()
    if cache is None:
        return None
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}|{digest}"
    return cache / "verified" / hashlib.sha256(key.encode()).hexdigest()[:32]


def _remember_verified(marker: Path | None, path: Path) -> None:
    """Skip re-reading the weights at the next load (0.1 s per 120 MB); an unwritable cache is no error."""
    if marker is None:
        return
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{path}\n")
    except OSError:
        pass


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_artifacts(manifest: dict) -> tuple[Artifact, ...]:
    artifacts = []
    for entry in manifest.get("artifacts", []):
        files = tuple(sorted((entry.get("files") or {}).items()))
        figures = (entry.get("gate") or {}).get("figures") or {}
        artifacts.append(Artifact(entry["path"], entry["backend"], entry["precision"], entry.get("sha256"), files,
                                  not_recommended=_gate_verdict(entry),
                                  gate=tuple(sorted((k, float(v)) for k, v in figures.items()
                                                    if isinstance(v, (int, float))))))
    return tuple(sorted(artifacts, key=_rank))


def _gate_verdict(entry: dict) -> str:
    """Why a manifest artifact is marked ``"recommended": false`` (the INT8 gate's missed bounds), else ""."""
    if entry.get("recommended", True):
        return ""
    if entry.get("not_recommended"):
        return str(entry["not_recommended"])
    missed = (entry.get("gate") or {}).get("missed") or []
    return "failed the INT8 gate (" + "; ".join(missed) + ")" if missed else "marked not recommended in the manifest"


def _rank(artifact: Artifact) -> tuple[int, str]:
    """Canonical names first within each (backend, precision): the backend's own ranking."""
    try:
        return backends.get(artifact.backend).rank(artifact)
    except GraniteRTError:  # a manifest naming a backend not registered here: last, and never planned
        return (9, artifact.path)


def _detect_kind(config: dict) -> Kind:
    architectures = config.get("architectures") or []
    return "reranker" if any(a.endswith("ForSequenceClassification") for a in architectures) else "embedder"


def _num_labels(config: dict) -> int:
    if "num_labels" in config:
        return int(config["num_labels"])
    return len(config.get("id2label") or {"0": "LABEL_0"})


def _activation(config: dict) -> str:
    """What CrossEncoder 6 applies in predict: the declared torch activation, else sigmoid for 1 label."""
    st = config.get("sentence_transformers") or {}
    path = st.get("activation_fn") or config.get("sbert_ce_default_activation_function")
    if path:
        if not str(path).startswith("torch."):
            warnings.warn(f"activation {path!r} is not a torch activation; CrossEncoder ignores it without "
                          "trust_remote_code, and so does granite-rt (default activation used)", stacklevel=4)
        else:
            name = str(path).rsplit(".", 1)[-1]
            if name not in _ACTIVATIONS:
                raise UnsupportedModelError(f"config.json declares activation {path!r}; granite-rt supports "
                                            f"{sorted(_ACTIVATIONS)} (pass activation='identity' for raw logits)")
            return _ACTIVATIONS[name]
    return "sigmoid" if _num_labels(config) == 1 else "identity"


def _pooling(folder: Path, modules: list[dict], hidden_size: int) -> tuple[tuple[str, ...], int]:
    """Pooling modes and token dimension from the Pooling module's config."""
    entry = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if entry is None:
        if modules:
            raise UnsupportedModelError(f"{folder / 'modules.json'} has no Pooling module; granite-rt runs "
                                        "Transformer → Pooling [→ Normalize] pipelines")
        return ("mean",), hidden_size  # sentence-transformers' default for a bare transformers model
    cfg = _require_json(folder, f"{entry.get('path') or '1_Pooling'}/config.json")
    modes = cfg.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if cfg.get(key)]
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise UnsupportedModelError(f"{folder / entry.get('path', '1_Pooling')}/config.json: pooling {unknown or modes} "
                                    f"is not one of {POOLING_MODES}")
    dim = int(cfg.get("embedding_dimension") or cfg.get("word_embedding_dimension") or hidden_size)
    return modes, dim


def _read_json(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc})") from exc


def _require_json(folder: Path, name: str) -> Any:
    data = _read_json(folder, name)
    if data is None:
        raise ModelFileError(f"{folder / name} is missing")
    return data
