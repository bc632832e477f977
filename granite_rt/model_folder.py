"""Resolve a model (folder or Hub id) and read what the reference would read from it → ModelSpec.

Max length, pooling, normalisation and the cross-encoder activation are derived from the
sentence-transformers files and ``config.json`` exactly as sentence-transformers 6 derives them,
so a folder without our manifest (IBM's Hub layout) loads the same way as one we exported.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from granite_rt.backends.base import Artifact, BackendName, Precision
from granite_rt.errors import ModelFileError, ModelNotFoundError, UnsupportedModelError

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
# Hub file patterns of each (backend, stored precision), in the names IBM's repos and our export use.
ARTIFACT_PATTERNS: dict[tuple[BackendName, Precision], tuple[str, ...]] = {
    ("onnx", "fp32"): ("onnx/model.onnx", "onnx/model.onnx_data"),
    ("onnx", "fp16"): ("onnx/model_fp16.onnx", "onnx/model_fp16.onnx_data"),
    ("onnx", "int8"): ("onnx/model_qint8*.onnx", "onnx/model_qint8*.onnx_data",
                       "onnx/model_quint8*.onnx", "onnx/model_quint8*.onnx_data"),
    ("openvino", "fp32"): ("openvino/openvino_model.xml", "openvino/openvino_model.bin"),
    ("openvino", "fp16"): ("openvino/openvino_model_fp16.xml", "openvino/openvino_model_fp16.bin"),
    ("openvino", "int8"): ("openvino/openvino_model_qint8_quantized.xml", "openvino/openvino_model_qint8_quantized.bin"),
}


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
    include_prompt: bool = True
    normalize: bool = False                 # embedder: the pipeline has a Normalize module
    matryoshka_dims: tuple[int, ...] = ()
    num_labels: int = 1                     # reranker
    activation: str = "identity"            # reranker: what CrossEncoder.predict applies by default
    manifest: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def dim(self) -> int:
        """Embedder: output dimension; reranker: number of labels."""
        return self.hidden_size * len(self.pooling) if self.kind == "embedder" else self.num_labels


def is_hub_id(model: str) -> bool:
    """True for ``org/name`` strings that are not an existing local path."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", model)) and not Path(model).exists()


def resolve_model(model: str | os.PathLike, backend: str = "auto", dtype: str = "auto",
                  revision: str | None = None) -> Path:
    """The local folder of ``model``: the folder itself, or a Hub snapshot of only the needed files."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if isinstance(model, str) and is_hub_id(model):
        backends, precisions = hub_wanted(backend, dtype)
        return fetch_from_hub(model, backends, precisions, revision)
    raise ModelNotFoundError(f"model {str(model)!r} is neither a folder nor a Hugging Face Hub id (org/name)")


def hub_wanted(backend: str = "auto", dtype: str = "auto") -> tuple[tuple[BackendName, ...], tuple[Precision, ...]]:
    """Backends and stored precisions worth fetching, best first: what ``auto`` would pick, then fp32."""
    import importlib.util

    if backend == "auto":
        backends = tuple(b for b, module in (("openvino", "openvino"), ("onnx", "onnxruntime"))
                         if importlib.util.find_spec(module) is not None) or ("onnx",)
    else:
        backends = (backend,)
    stored = {"auto": ("int8", "fp32"), "bf16": ("fp32",)}
    return backends, stored.get(dtype, (dtype,))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_patterns(backends: tuple[BackendName, ...], precisions: tuple[Precision, ...],
                 repo_files: list[str] | None = None) -> list[str]:
    """allow_patterns for snapshot_download: metadata plus the first wanted artifact the repo has.

    Without the repo's file list (offline) every wanted (backend, precision) pattern is allowed.
    """
    from fnmatch import fnmatch

    wanted = [(b, p) for p in precisions for b in backends if (b, p) in ARTIFACT_PATTERNS]
    if repo_files is not None:
        usable = [f for f in repo_files if _runs_here(f.rsplit("/", 1)[-1])]
        present = [key for key in wanted
                   if any(fnmatch(f, pat) for f in usable for pat in ARTIFACT_PATTERNS[key])]
        wanted = present[:1] or wanted
    return list(META_FILES) + [pat for key in wanted for pat in ARTIFACT_PATTERNS[key]]


def fetch_from_hub(repo_id: str, backends: tuple[BackendName, ...], precisions: tuple[Precision, ...],
                   revision: str | None = None) -> Path:
    """Download (or find in the cache, when offline) only the files the chosen backend needs."""
    import huggingface_hub

    offline = hub_offline()
    repo_files = None
    if not offline:
        try:
            repo_files = huggingface_hub.list_repo_files(repo_id, revision=revision)
        except Exception as exc:  # noqa: BLE001 - re-raised below with the repo id when fetching fails too
            warnings.warn(f"could not list the files of {repo_id} ({exc}); fetching every candidate artifact",
                          stacklevel=3)
    patterns = hub_patterns(backends, precisions, repo_files)
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                                   local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one actionable error
        where = "in the local cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face Hub"
        raise ModelNotFoundError(f"could not fetch {repo_id!r} {where} (and there is no local folder of that "
                                 f"name): {exc}") from exc
    return Path(folder)


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
    common = dict(folder=folder, kind=kind, artifacts=artifacts, manifest=manifest,
                  max_length=reference_max_length(sbert, tok_config, config),
                  hidden_size=int(config.get("hidden_size") or config.get("d_model") or 0),
                  do_lower_case=bool(sbert.get("do_lower_case", False)),
                  truncation_side=str(tok_config.get("truncation_side", "right")))
    if kind == "reranker":
        return ModelSpec(**common, num_labels=_num_labels(config), activation=_activation(config))
    modules = _read_json(folder, "modules.json") or []
    pooling, include_prompt, hidden = _pooling(folder, modules, common["hidden_size"])
    st_config = _read_json(folder, "config_sentence_transformers.json") or {}
    dims = (manifest or {}).get("matryoshka_dims") or st_config.get("matryoshka_dims") or ()
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    return ModelSpec(**{**common, "hidden_size": hidden}, pooling=pooling, include_prompt=include_prompt,
                     normalize=normalize, matryoshka_dims=tuple(int(d) for d in dims))


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
    """Artifacts of a folder without manifest, best first within each (backend, precision)."""
    found = [Artifact(p.relative_to(folder).as_posix(), "onnx", _onnx_precision(p.name),
                      not_recommended=DYNAMIC_INT8 if _onnx_precision(p.name) == "int8" and _is_dynamic_int8(p) else "")
             for p in sorted((folder / "onnx").glob("*.onnx")) if _runs_here(p.name)]
    found += [Artifact(p.relative_to(folder).as_posix(), "openvino", _ov_precision(p.name))
              for p in sorted((folder / "openvino").glob("*.xml"))]
    if (folder / "model.onnx").is_file():  # flat layout (optimum / older exports)
        found.append(Artifact("model.onnx", "onnx", "fp32"))
    return tuple(sorted(found, key=_artifact_rank))


# Why dtype="auto" passes over a dynamic INT8 ONNX file (IBM's model_quint8_avx2.onnx ..., optimum's dynamic
# quantization): activation scales are computed over the whole padded batch, so a vector changes with its batch
# neighbours (all-MiniLM-L6-v2: cosine down to 0.987 alone vs batched, docs/export.md).
DYNAMIC_INT8 = ("dynamic INT8: its vectors depend on their batch neighbours (cosine down to 0.987 measured); "
                "`granite-rt quantize FOLDER` writes a static, batch-invariant INT8")


def _is_dynamic_int8(path: Path) -> bool:
    """Whether an ONNX file quantizes activations at run time (DynamicQuantizeLinear). The graph's nodes are
    serialized before its weights, so the first 8 MiB hold every op type."""
    try:
        with open(path, "rb") as fh:
            return b"DynamicQuantizeLinear" in fh.read(8 << 20)
    except OSError:
        return False


def artifact_files(folder: Path, artifact: Artifact) -> list[Path]:
    """The files an artifact consists of: the graph, an IR's .bin, ONNX external data."""
    main = folder / artifact.path
    files = [main] + ([main.with_suffix(".bin")] if artifact.backend == "openvino" else [])
    if main.suffix == ".onnx" and (folder / (artifact.path + "_data")).exists():
        files.append(folder / (artifact.path + "_data"))
    return files


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
    if artifact.backend == "openvino":
        _check_openvino_weights(files[0], files[1])
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
    hub = [p for p in files if p.is_file() and hub_sha256(p) is not None]
    if hub and len(hub) == len(files):
        return "sha256 of every file against the Hugging Face Hub's (LFS hash in its cache)"
    if hub:
        return (f"sha256 of {', '.join(p.name for p in hub)} against the Hugging Face Hub's; "
                f"{', '.join(p.name for p in files if p not in hub)} only for size")
    return (f"not verified: no {MANIFEST} and not from a Hugging Face cache; `granite-rt manifest {folder}` "
            "pins the files as they are now")


def _verified_marker(path: Path, digest: str) -> Path | None:
    """Where a passed check of ``path`` against ``digest`` is remembered: keyed by the file's identity and
    every stat field a write changes (size, mtime, ctime, inode), so a replaced or rewritten file is hashed
    again. None when the cache is off (GRANITE_RT_CACHE=off)."""
    from granite_rt.devices import default_cache_dir

    cache = default_cache_dir()
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


def _check_openvino_weights(xml: Path, weights: Path) -> None:
    """The IR's constants must lie inside the .bin (a truncated .bin crashes OpenVINO later)."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise ModelFileError(f"{xml} is not a valid OpenVINO IR ({exc}); re-export or re-download it") from exc
    end = 0
    for data in root.iter("data"):
        if "offset" in data.attrib and "size" in data.attrib:
            end = max(end, int(data.attrib["offset"]) + int(data.attrib["size"]))
    size = weights.stat().st_size
    if size < end:
        raise ModelFileError(f"{weights} is truncated: {size} bytes, the IR {xml.name} needs {end}")


def _manifest_artifacts(manifest: dict) -> tuple[Artifact, ...]:
    artifacts = []
    for entry in manifest.get("artifacts", []):
        files = tuple(sorted((entry.get("files") or {}).items()))
        artifacts.append(Artifact(entry["path"], entry["backend"], entry["precision"], entry.get("sha256"), files,
                                  not_recommended=_gate_verdict(entry)))
    return tuple(sorted(artifacts, key=_artifact_rank))


def _gate_verdict(entry: dict) -> str:
    """Why a manifest artifact is marked ``"recommended": false`` (the INT8 gate's missed bounds), else ""."""
    if entry.get("recommended", True):
        return ""
    if entry.get("not_recommended"):
        return str(entry["not_recommended"])
    missed = (entry.get("gate") or {}).get("missed") or []
    return "failed the INT8 gate (" + "; ".join(missed) + ")" if missed else "marked not recommended in the manifest"


def _onnx_precision(name: str) -> Precision:
    if "fp16" in name or "_O4" in name:
        return "fp16"
    return "int8" if re.search(r"q?u?int8|quantized", name) else "fp32"


def _ov_precision(name: str) -> Precision:
    if "fp16" in name:
        return "fp16"
    return "int8" if re.search(r"int8|quantized", name) else "fp32"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def _runs_here(name: str) -> bool:
    """Hub repos ship INT8 files per instruction set; skip those this CPU cannot run."""
    arm = platform.machine().lower() in {"arm64", "aarch64"}
    if "arm64" in name:
        return arm
    if "avx512_vnni" in name:
        return not arm and {"avx512f", "avx512_vnni"} <= _cpu_flags()
    if "avx512" in name:
        return not arm and "avx512f" in _cpu_flags()
    if "avx2" in name:
        return not arm and "avx2" in _cpu_flags()
    return True


def _artifact_rank(artifact: Artifact) -> tuple[int, str]:
    """Canonical names first (ours / IBM's), then specialised variants, then optimisation levels."""
    name = artifact.path.rsplit("/", 1)[-1]
    canonical = name in {"model.onnx", "model_fp16.onnx", "model_qint8.onnx", "openvino_model.xml",
                         "openvino_model_qint8_quantized.xml", "openvino_model_fp16.xml"}
    specialised = 1 if "avx512_vnni" in name else 2 if "avx512" in name else 3
    return (0 if canonical else specialised if "int8" in name else 4, name)


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


def _pooling(folder: Path, modules: list[dict], hidden_size: int) -> tuple[tuple[str, ...], bool, int]:
    """Pooling modes, include_prompt and token dimension from the Pooling module's config."""
    entry = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if entry is None:
        if modules:
            raise UnsupportedModelError(f"{folder / 'modules.json'} has no Pooling module; granite-rt runs "
                                        "Transformer → Pooling [→ Normalize] pipelines")
        return ("mean",), True, hidden_size  # sentence-transformers' default for a bare transformers model
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
    return modes, bool(cfg.get("include_prompt", True)), dim


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
