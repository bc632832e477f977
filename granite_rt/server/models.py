"""The runtime's Embedder and Reranker as the server uses them.

Each service counts tokens (for the batch budget, 413 on over-long input and OpenAI's
``usage``), tokenizes for /tokenize, and runs one model call per batch with the options
the batcher grouped it by, through the same ``encode`` / ``predict`` a Python user calls.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

from granite_rt.batching import ShapeBuckets
from granite_rt.embedder import Embedder
from granite_rt.reranker import Reranker


class _Service:
    """What the embedder and reranker services share: a name, the model, its tokenizer."""

    kind: str

    def __init__(self, model: Any, name: str, batch_size: int = 32) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self._tokenizer = model.tokenizer.untruncated()

    @property
    def max_length(self) -> int:
        return int(self.model.max_length)

    @property
    def dtype(self) -> str:
        return str(self.model.info.get("dtype", "unknown"))

    def describe(self) -> dict[str, Any]:
        """The model's ``info`` (backend, device, dtype, files) with its name."""
        return {"name": self.name, **{k: v for k, v in self.model.info.items() if _jsonable(v)}}

    def summary(self) -> str:
        """One line for the start-up log: what was loaded and what runs it."""
        info = self.model.info
        buckets = self.model.shape_buckets
        shapes = f"{len(list(buckets.shapes()))} batch shapes" if buckets is not None else "unbucketed batch shapes"
        return (f"{self.kind} {self.name}: backend={info.get('backend')} device={info.get('device')} "
                f"dtype={info.get('dtype')} file={info.get('file')} max_length={self.max_length} ({shapes})")

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """TEI's /decode answer: the text of each list of token ids."""
        return self._tokenizer.decode_batch([list(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[dict[str, Any]]]:
        """TEI's /tokenize answer: per text, tokens with id, text, special flag and character span."""
        out = []
        for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens):
            tokens = []
            for token_id, token, special, (start, stop) in zip(enc.ids, enc.tokens, enc.special_tokens_mask,
                                                               enc.offsets):
                tokens.append({"id": token_id, "text": token, "special": bool(special),
                               "start": None if special else start, "stop": None if special else stop})
            out.append(tokens)
        return out


class EmbeddingService(_Service):
    kind = "embedder"

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def model_type(self) -> dict[str, Any]:
        return {"embedding": {"pooling": str(self.model.info.get("pooling", "cls"))}}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation."""
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(list(texts))]

    def run(self, key: Hashable, texts: list[str]) -> np.ndarray:
        """``encode`` as a Python caller would; truncation was already decided per request (413 or
        ``truncate``), so the runtime's truncation report is taken as a mask, not a warning."""
        normalize, dimensions = key
        vectors, _truncated = self.model.encode(texts, batch_size=self.batch_size, normalize=normalize,
                                                truncate_dim=dimensions, return_truncation=True)
        return vectors


class RerankService(_Service):
    kind = "reranker"

    def model_type(self) -> dict[str, Any]:
        return {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}

    def token_counts(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Tokens per (query, text) pair as the cross-encoder sees it, before truncation."""
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(list(pairs))]

    def run(self, key: Hashable, pairs: list[tuple[str, str]]) -> np.ndarray:
        return self.model.predict(pairs, batch_size=self.batch_size, activation=key)


def load_services(embedder: str | None, reranker: str | None, backend: str = "auto", device: str = "auto",
                  dtype: str = "auto", batch_size: int = 32,
                  bucket_steps: int | None = 4) -> tuple[EmbeddingService | None, RerankService | None]:
    """Load the models named on the command line (before the server binds its port).

    ``bucket_steps``: batch widths per doubling of length (``ShapeBuckets.geometric``), so the backends
    see a bounded set of shapes and the server's memory stays within a fixed budget; None: unbucketed."""
    options = {"backend": backend, "device": device, "dtype": dtype}
    embedding = EmbeddingService(Embedder(embedder, **options), embedder, batch_size) if embedder else None
    rerank = RerankService(Reranker(reranker, **options), reranker, batch_size) if reranker else None
    for service in (embedding, rerank):
        if service is not None and bucket_steps is not None:
            service.model.shape_buckets = ShapeBuckets.geometric(service.max_length, batch_size, bucket_steps)
    return embedding, rerank


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))
