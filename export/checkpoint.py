"""Resolve MODEL (folder or Hub id), detect its kind, refuse config keys transformers would ignore, load it.

The config check exists because a transformers version that does not know a key keeps it as an
inert attribute: the model then runs with defaults and exports "successfully" but wrongly (e.g.
transformers < 4.58 ignores Granite R2's ``rope_parameters`` / ``layer_types``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from granite_rt import hub
from granite_rt.errors import ModelNotFoundError, UnsupportedModelError

Kind = Literal["embedder", "reranker"]
KINDS: tuple[Kind, ...] = ("embedder", "reranker")
# model_type → family; the families the runtime's graph contract covers.
SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta", "modernbert")
# Files never needed from the Hub: other frameworks' weights and already-exported graphs.
HUB_IGNORE = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*",
              "rust_model*", "coreml/*", "*.gguf"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# ModernBERT's RoPE keys as transformers 5 reads them; any other rope key would be ignored.
_MODERNBERT_ROPE_KEYS = {"rope_parameters", "global_rope_theta", "local_rope_theta"}
_MODERNBERT_LAYER_TYPES = ("full_attention", "sliding_attention")
_MODERNBERT_LEGACY_THETA = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
# Keys whose loaded value legitimately differs from config.json (bookkeeping, not model behaviour).
_BOOKKEEPING_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures",
                     "id2label", "label2id", "auto_map"}


@dataclass(frozen=True)
class Checkpoint:
    """A resolved source checkpoint: where it lies, what it is, and its raw config.json."""

    source: str          # what the user passed (repo id or folder)
    folder: Path         # local folder holding the files
    kind: Kind
    architecture: str    # config ``architectures[0]``
    model_type: str
    raw_config: dict[str, Any]


def resolve_folder(source: str) -> Path:
    """A local checkpoint folder for ``source``: the folder itself, or a Hub snapshot (HF_HUB_OFFLINE honoured)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"MODEL {source!r} is a file; pass the checkpoint folder that holds config.json")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"MODEL folder {str(path)!r} has no config.json; it is not a transformers checkpoint")
        return path
    if not _REPO_ID.match(source) or hub.looks_like_path(source):
        raise hub.local_folder_error(source)
    return _download(source)


def _download(repo_id: str) -> Path:
    """The checkpoint's snapshot (weights in PyTorch/safetensors form, no exported graphs), one Hub lookup first."""
    folder = hub.download(hub.lookup(repo_id), ignore_patterns=HUB_IGNORE)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"Hub repo {repo_id!r} has no config.json; it is not a transformers checkpoint")
    return folder


def inspect(source: str, kind: Kind | None = None) -> Checkpoint:
    """Resolve ``source``, read its config, check the architecture and config keys, and settle the kind."""
    folder = resolve_folder(source)
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelNotFoundError(f"{folder / 'config.json'}: unreadable config ({err})") from None
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"unsupported architecture: model_type {model_type!r} ({', '.join(architectures) or 'no architectures'}); "
            f"the export supports encoders of the families {', '.join(SUPPORTED_MODEL_TYPES)}")
    detected: Kind = "reranker" if any(a.endswith("ForSequenceClassification") for a in architectures) else "embedder"
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "reranker" and detected != "reranker":
        raise UnsupportedModelError(
            f"--kind reranker: {folder} has no sequence-classification head (architectures {architectures}); "
            "a reranker needs a *ForSequenceClassification checkpoint")
    check_config_keys(raw)
    return Checkpoint(source=source, folder=folder, kind=kind or detected,
                      architecture=architectures[0] if architectures else model_type,
                      model_type=model_type, raw_config=raw)


def check_config_keys(raw: dict[str, Any]) -> None:
    """Refuse position-encoding keys that the installed transformers would ignore or that contradict each other."""
    rope_keys = sorted(k for k in raw if "rope" in k.lower())
    if raw["model_type"] == "modernbert":
        unknown = [k for k in rope_keys if k not in _MODERNBERT_ROPE_KEYS]
        if unknown:
            raise UnsupportedModelError(
                f"config.json has RoPE keys {unknown} that transformers' ModernBERT ignores "
                f"(it reads only {sorted(_MODERNBERT_ROPE_KEYS)}); refusing to export a model that would run with defaults")
        expected_rope_thetas(raw)  # raises on contradictions
        _expected_layer_types(raw)
        return
    if rope_keys:
        raise UnsupportedModelError(
            f"config.json has RoPE keys {rope_keys}, but {raw['model_type']} uses absolute position embeddings "
            "in the installed transformers; these keys would be ignored")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModelError(
            f"config.json asks for position_embedding_type={raw['position_embedding_type']!r}; the installed "
            "transformers implements only 'absolute' and would ignore it")


def expected_rope_thetas(raw: dict[str, Any]) -> dict[str, float]:
    """ModernBERT's RoPE base per layer type as config.json writes it (transformers-5 or legacy keys)."""
    from transformers import ModernBertConfig

    params = raw.get("rope_parameters") or {}
    if not isinstance(params, dict) or set(params) - set(_MODERNBERT_LAYER_TYPES):
        raise UnsupportedModelError(
            f"config.json rope_parameters must map {list(_MODERNBERT_LAYER_TYPES)} to RoPE settings; got "
            f"{sorted(params) if isinstance(params, dict) else params!r}")
    thetas: dict[str, float] = {}
    for layer_type in _MODERNBERT_LAYER_TYPES:
        entry = params.get(layer_type) or {}
        extra = sorted(set(entry) - {"rope_type", "rope_theta"})
        if entry.get("rope_type", "default") != "default" or extra:
            raise UnsupportedModelError(
                f"config.json rope_parameters[{layer_type!r}] = {entry}: only the default RoPE "
                "(rope_type 'default', rope_theta) is verified by the export; other settings would not be checked")
        legacy = raw.get(_MODERNBERT_LEGACY_THETA[layer_type])
        theta = entry.get("rope_theta")
        if theta is not None and legacy is not None and not math.isclose(float(theta), float(legacy)):
            raise UnsupportedModelError(
                f"config.json contradicts itself: rope_parameters[{layer_type!r}].rope_theta = {theta} but "
                f"{_MODERNBERT_LEGACY_THETA[layer_type]} = {legacy}; transformers would silently use {theta}")
        default = ModernBertConfig.default_theta["global" if layer_type == "full_attention" else "local"]
        thetas[layer_type] = float(theta if theta is not None else legacy if legacy is not None else default)
    return thetas


def _expected_layer_types(raw: dict[str, Any]) -> list[str]:
    layers = raw.get("num_hidden_layers", 0)
    every = raw.get("global_attn_every_n_layers", 3)
    declared = raw.get("layer_types")
    if declared is None:
        return ["sliding_attention" if i % every else "full_attention" for i in range(layers)]
    if len(declared) != layers or set(declared) - set(_MODERNBERT_LAYER_TYPES):
        raise UnsupportedModelError(
            f"config.json layer_types {declared} must list {layers} entries from {list(_MODERNBERT_LAYER_TYPES)}")
    return list(declared)


def check_loaded(model, raw: dict[str, Any]) -> None:
    """Prove the loaded torch model runs the config as written: every key kept, RoPE and layer types as declared."""
    loaded = model.config.to_dict()
    dropped = sorted(k for k in raw if k not in _BOOKKEEPING_KEYS | _MODERNBERT_ROPE_KEYS
                     and (k not in loaded or loaded[k] != raw[k]))
    if dropped:
        raise UnsupportedModelError(
            f"the installed transformers changed or dropped config.json keys {dropped} when loading; "
            "the exported model would not be the one the config describes")
    if raw["model_type"] != "modernbert":
        return
    import torch

    base = model.base_model
    actual_types = [layer.attention_type for layer in base.layers]
    if actual_types != _expected_layer_types(raw):
        raise UnsupportedModelError(
            f"loaded ModernBERT layer types {actual_types} differ from config.json {_expected_layer_types(raw)}")
    head_dim = raw["hidden_size"] // raw["num_attention_heads"]
    for layer_type, theta in expected_rope_thetas(raw).items():
        if layer_type not in actual_types:
            continue
        want = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        got = getattr(base.rotary_emb, f"{layer_type}_inv_freq")
        if got.shape != want.shape or not torch.allclose(got.float(), want, rtol=1e-6, atol=0):
            raise UnsupportedModelError(
                f"loaded ModernBERT {layer_type} RoPE does not use rope_theta={theta} from config.json")


def load_model(checkpoint: Checkpoint):
    """The torch model to export (eval, fp32, eager attention), checked against config.json."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if checkpoint.kind == "reranker" else AutoModel
    model = cls.from_pretrained(checkpoint.folder, attn_implementation="eager", dtype="float32").eval()
    check_loaded(model, checkpoint.raw_config)
    return model
