"""Embedder: texts → vectors, with sentence-transformers' ``encode`` call shape.

tokenize → length-sorted batches → backend → pooling the model declares → [truncate] → [L2].
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from granite_rt.pooling import l2_normalize, pool
from granite_rt.runtime import LoadedModel
from granite_rt.tokenize import check_texts


class Embedder:
    """A sentence embedding model (Granite R2, or any sentence-transformers encoder) on onnxruntime/OpenVINO."""

    def __init__(self, model: str | os.PathLike, backend: str = "auto", device: str | list = "auto",
                 dtype: str = "auto", *, threads: int | None = None, allow_fallback: bool | None = None,
                 revision: str | None = None) -> None:
        self._model = LoadedModel(model, "embedder", backend=backend, device=device, dtype=dtype,
                                  threads=threads, allow_fallback=allow_fallback, revision=revision)
        self.spec = self._model.spec
        self.tokenizer = self._model.tokenizer
        self.info: dict[str, Any] = {**self._model.info, "dim": self.dim, "pooling": "+".join(self.spec.pooling),
                                     "normalize": self.spec.normalize,
                                     "matryoshka_dims": list(self.spec.matryoshka_dims)}

    @property
    def dim(self) -> int:
        """Length of the vectors ``encode`` returns (before truncate_dim)."""
        return self.spec.dim

    @property
    def max_length(self) -> int:
        """Tokens per text (special tokens included); longer texts are truncated, as the reference does."""
        return self.spec.max_length

    def encode(self, texts: str | Iterable[str], batch_size: int = 32, normalize: bool = True,
               truncate_dim: int | None = None, show_progress_bar: bool = False) -> np.ndarray:
        """(n, dim) float32 vectors in input order; a single string gives one (dim,) vector.

        ``normalize=True`` L2-normalises the final vectors; ``False`` returns the pooled vectors raw
        (without the model's Normalize step). ``truncate_dim`` keeps the first dimensions (Matryoshka).
        """
        single = isinstance(texts, str)
        items = check_texts(_as_list(texts, "texts") if not single else [texts])
        dim = self._output_dim(truncate_dim)
        if not items:
            return np.zeros((0, dim), dtype=np.float32)
        vectors = self._embed_tokens(self.tokenizer.encode(items), batch_size, show_progress_bar)
        vectors = self._finish(vectors, normalize, dim)
        return vectors[0] if single else vectors

    def _embed_tokens(self, encodings: Sequence, batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
        """Pooled float32 vectors (n, dim) of tokenized texts, before truncation and normalisation."""
        modes = self.spec.pooling
        return self._model.run(encodings, batch_size, lambda hidden, batch: pool(hidden, batch["attention_mask"], modes),
                               show_progress_bar=show_progress_bar)

    def _finish(self, vectors: np.ndarray, normalize: bool, dim: int) -> np.ndarray:
        """Keep the first ``dim`` dimensions, then L2-normalise when asked."""
        vectors = vectors[:, :dim] if dim < vectors.shape[1] else vectors
        return l2_normalize(vectors) if normalize else np.ascontiguousarray(vectors, dtype=np.float32)

    def _output_dim(self, truncate_dim: int | None) -> int:
        if truncate_dim is None:
            return self.dim
        if not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or not 1 <= truncate_dim <= self.dim:
            raise ValueError(f"truncate_dim must be an int in 1..{self.dim}, got {truncate_dim!r}")
        return truncate_dim


def _as_list(items: Any, what: str) -> list:
    """A list from a list/tuple/iterable argument; anything else is a TypeError naming the argument."""
    if items is None or isinstance(items, (bytes, dict)) or not hasattr(items, "__iter__"):
        raise TypeError(f"{what} must be a str or a list of str, got {type(items).__name__}")
    return list(items)
