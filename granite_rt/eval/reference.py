"""The torch reference for ``evaluate(reference=True)``: sentence-transformers on the source weights.

Imported by the evaluation only when reference mode is asked for; sentence-transformers and torch
are imported inside the functions, so the runtime never pulls them in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from granite_rt.errors import BackendUnavailableError, ModelNotFoundError


def reference_source(model: str | Path, override: str | Path | None = None) -> str:
    """The torch checkpoint behind a model: ``override``, else the manifest's ``source``, else the model itself."""
    if override is not None:
        return str(override)
    manifest = Path(model) / "granite_rt.json"
    if manifest.is_file():
        source = json.loads(manifest.read_text(encoding="utf-8")).get("source")
        if source:
            return str(source)
    return str(model)


def _import(name: str):
    try:
        import sentence_transformers
    except ImportError as err:
        raise BackendUnavailableError(
            f"reference mode needs sentence-transformers and torch ({err}): install torch==2.13.0, "
            "then pip install 'granite-rt[export]'") from None
    return getattr(sentence_transformers, name)


def _load(cls, source: str):
    try:
        return cls(source, device="cpu")
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"reference mode cannot load the torch checkpoint {source!r} with "
                                 f"sentence-transformers ({' '.join(str(err).split())[:300]}); "
                                 "point --reference-model at the source checkpoint") from None


class ReferenceEmbedder:
    """SentenceTransformer(source).encode with normalised float32 output."""

    def __init__(self, source: str) -> None:
        self.model = _load(_import("SentenceTransformer"), source)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True), np.float32)


class ReferenceReranker:
    """CrossEncoder(source).predict with its default activation (what Reranker's activation='auto' matches)."""

    def __init__(self, source: str) -> None:
        self.model = _load(_import("CrossEncoder"), source)

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.model.predict(list(pairs), batch_size=batch_size, convert_to_numpy=True), np.float32)
