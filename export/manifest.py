"""``granite_rt.json``: what the model is (read as sentence-transformers reads it), its artifacts and parity.

Pooling, normalisation, max length, dimension and activation are taken from the loaded
sentence-transformers reference object itself, so the manifest says exactly what the
reference computes rather than a re-implementation of its file parsing.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from granite_rt.errors import UnsupportedModelError
from granite_rt.backends.base import Artifact
from granite_rt.model_folder import artifact_files, sha256_file

from .checkpoint import Checkpoint

FORMAT_VERSION = 1
MANIFEST_NAME = "granite_rt.json"
_VERSIONED = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "openvino", "nncf",
              "tokenizers", "granite-rt")
_GRAPH_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ModelInfo:
    """The model-level fields of the manifest."""

    kind: str
    source: str
    architecture: str
    max_seq_length: int
    dim: int
    matryoshka_dims: list[int]
    pooling: str | None
    normalize: bool
    activation: str | None
    inputs: list[str]
    output: str
    first_position_only: bool = False   # the graph computes what CLS pooling reads (export/first_position.py)


@dataclass
class ArtifactRecord:
    """One exported artifact: where, which backend and precision, checksums, how quantised, parity."""

    path: str
    backend: str
    precision: str
    files: dict[str, str]
    quantization: dict[str, Any] | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    recommended: bool = True                 # False: missed the INT8 gate; dtype="auto" skips it
    gate: dict[str, Any] | None = None       # the INT8 gate's figures, bounds and missed bounds

    @property
    def artifact(self) -> Artifact:
        return Artifact(self.path, self.backend, self.precision)  # type: ignore[arg-type]

    @property
    def sha256(self) -> str:
        return self.files[self.path]


def record_artifact(folder: Path, path: str, backend: str, precision: str,
                    quantization: dict | None = None) -> ArtifactRecord:
    """An ArtifactRecord for an artifact already written under ``folder``: sha256 of each of its files
    (the graph, an IR's .bin, ONNX external data), found the way the runtime finds them."""
    parts = artifact_files(folder, Artifact(path, backend, precision))  # type: ignore[arg-type]
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in parts}
    return ArtifactRecord(path=path, backend=backend, precision=precision, files=files, quantization=quantization)


def graph_inputs(tokenizer_input_names: list[str], model) -> list[str]:
    """Tokenizer outputs the model's forward accepts (sentence-transformers drops the others), in graph order."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in _GRAPH_INPUT_ORDER if n in tokenizer_input_names and n in accepted]
    if "input_ids" not in names or "attention_mask" not in names:
        raise UnsupportedModelError(
            f"tokenizer inputs {tokenizer_input_names} lack input_ids/attention_mask the runtime feeds")
    return names


def describe_embedder(checkpoint: Checkpoint, st_model, inputs: list[str]) -> ModelInfo:
    """Model info of a sentence-transformers bi-encoder: Transformer → Pooling [→ Normalize]."""
    from sentence_transformers.models import Normalize, Pooling, Transformer

    modules = list(st_model)
    extra = [type(m).__name__ for m in modules if not isinstance(m, (Transformer, Pooling, Normalize))]
    poolings = [m for m in modules if isinstance(m, Pooling)]
    if extra or len(poolings) != 1:
        raise UnsupportedModelError(
            f"{checkpoint.folder}: sentence-transformers pipeline {[type(m).__name__ for m in modules]} is not "
            "Transformer → Pooling [→ Normalize]; the runtime pools in numpy and cannot run other modules")
    pooling = poolings[0].pooling_mode
    if pooling not in ("cls", "mean", "max"):
        raise UnsupportedModelError(f"{checkpoint.folder}: pooling mode {pooling!r} is not one of cls, mean, max")
    return ModelInfo(
        kind="embedder", source=checkpoint.source, architecture=checkpoint.architecture,
        max_seq_length=int(st_model.max_seq_length), dim=_embedding_dimension(st_model),
        matryoshka_dims=_matryoshka_dims(checkpoint.folder), pooling=pooling,
        normalize=any(isinstance(m, Normalize) for m in modules), activation=None,
        inputs=inputs, output="last_hidden_state",
    )


def _embedding_dimension(st_model) -> int:
    """sentence-transformers 6 renamed get_sentence_embedding_dimension (FutureWarning) to get_embedding_dimension."""
    getter = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
    return int(getter())


def _cross_encoder_max_length(cross_encoder):
    """CrossEncoder.max_length is deprecated (DeprecationWarning) for max_seq_length in sentence-transformers 6."""
    length = getattr(cross_encoder, "max_seq_length", None)
    return cross_encoder.max_length if length is None else length


def describe_reranker(checkpoint: Checkpoint, cross_encoder, inputs: list[str]) -> ModelInfo:
    """Model info of a sentence-transformers CrossEncoder: one logit per label, its default activation."""
    activation = type(cross_encoder.activation_fn).__name__.lower()
    if activation not in ("sigmoid", "identity"):
        raise UnsupportedModelError(
            f"{checkpoint.folder}: CrossEncoder activation {activation!r} is not sigmoid or identity")
    return ModelInfo(
        kind="reranker", source=checkpoint.source, architecture=checkpoint.architecture,
        max_seq_length=int(_cross_encoder_max_length(cross_encoder)), dim=int(cross_encoder.num_labels), matryoshka_dims=[],
        pooling=None, normalize=False, activation=activation, inputs=inputs, output="logits",
    )


def _matryoshka_dims(folder: Path) -> list[int]:
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return []
    dims = json.loads(path.read_text(encoding="utf-8")).get("matryoshka_dims") or []
    return [int(d) for d in dims]


def versions() -> dict[str, str]:
    """Versions of everything that shaped the artifacts."""
    found = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def build_manifest(info: ModelInfo, artifacts: list[ArtifactRecord], parity: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, **asdict(info)}
    manifest["artifacts"] = [{**asdict(a), "sha256": a.sha256} for a in artifacts]
    manifest["versions"] = versions()
    manifest["parity"] = parity
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
