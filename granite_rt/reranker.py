"""Reranker: (query, document) pairs → relevance scores, with CrossEncoder's ``predict`` / ``rank`` call shapes.

tokenize pairs in the tokenizer's pair template → length-sorted batches → backend logits → activation.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from granite_rt.arguments import as_list, is_int
from granite_rt.background import Cancellable, Progress
from granite_rt.runtime import RuntimeModel
from granite_rt.tokenize import check_max_query_tokens, check_texts

ACTIVATIONS = {
    "sigmoid": lambda x: np.exp(-np.logaddexp(0.0, -x)),
    "identity": lambda x: x,
    "tanh": np.tanh,
}


class Reranker(RuntimeModel):
    """A cross-encoder (Granite reranker R2, or any sequence-classification encoder) on onnxruntime/OpenVINO.

    Same constructor as Embedder; ``max_length`` counts the whole pair (truncated longest-first).
    """

    kind = "reranker"

    def _describe(self) -> dict[str, Any]:
        return {"num_labels": self.spec.num_labels, "activation": self.spec.activation}

    def predict(self, pairs: Sequence[tuple[str, str]] | tuple[str, str], batch_size: int = 32,
                activation: str = "auto", show_progress_bar: bool = False, *,
                max_query_tokens: int | None = None, progress: Progress | None = None,
                cancel: Cancellable | None = None) -> np.ndarray:
        """Scores (n,) float32 in input order ((n, num_labels) for multi-label models); one pair gives a scalar.

        ``activation="auto"`` applies what CrossEncoder.predict applies for this checkpoint.
        ``max_query_tokens`` cuts queries to that many tokens first (the Granite model card uses 64);
        pairs still longer than max_length are truncated longest-first, as the reference tokenizer does.
        ``progress(done, total)`` after each batch; ``cancel`` set → CancelledError before the next batch.
        """
        fn = self._activation(activation)
        check_max_query_tokens(max_query_tokens)
        single = _is_pair(pairs)
        items = _check_pairs([pairs] if single else as_list(pairs, "pairs", "a list of (query, document) pairs or one pair"))
        if not items:
            return np.zeros((0,) if self.spec.num_labels == 1 else (0, self.spec.num_labels), dtype=np.float32)
        logits = self._run(self.tokenizer.encode_pairs(items, max_query_tokens=max_query_tokens), batch_size,
                           lambda out, batch: np.asarray(out, dtype=np.float32).reshape(len(out), -1),
                           show_progress_bar, progress, cancel)
        scores = fn(logits.astype(np.float64)).astype(np.float32)
        scores = scores[:, 0] if self.spec.num_labels == 1 else scores
        return scores[0] if single else scores

    def rank(self, query: str, documents: Iterable[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, activation: str = "auto",
             show_progress_bar: bool = False, *, max_query_tokens: int | None = None,
             progress: Progress | None = None, cancel: Cancellable | None = None) -> list[dict[str, Any]]:
        """Documents sorted by score, best first: ``{"corpus_id", "score"[, "text"]}``, ties kept in input order."""
        if self.spec.num_labels != 1:
            raise ValueError(f"rank needs a model with one label; this one has {self.spec.num_labels} (use predict)")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        docs = check_texts(as_list(documents, "documents", "a list of str"), "documents")
        if top_k is not None and (not is_int(top_k) or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        scores = self.predict([(query, d) for d in docs], batch_size=batch_size, activation=activation,
                              show_progress_bar=show_progress_bar, max_query_tokens=max_query_tokens,
                              progress=progress, cancel=cancel)
        results = [{"corpus_id": i, "score": float(s), **({"text": d} if return_documents else {})}
                   for i, (s, d) in enumerate(zip(scores, docs))]
        return sorted(results, key=lambda r: r["score"], reverse=True)[:top_k]

    async def predict_async(self, pairs: Sequence[tuple[str, str]] | tuple[str, str], *,
                            progress: Progress | None = None, cancel: Cancellable | None = None,
                            **kwargs: Any) -> np.ndarray:
        """``predict`` on this model's worker thread (see ``Embedder.encode_async``)."""
        return await self._in_worker(self.predict, pairs=pairs, progress=progress, cancel=cancel, **kwargs)

    async def rank_async(self, query: str, documents: Iterable[str], *, progress: Progress | None = None,
                         cancel: Cancellable | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """``rank`` on this model's worker thread (see ``Embedder.encode_async``)."""
        return await self._in_worker(self.rank, query=query, documents=documents, progress=progress,
                                     cancel=cancel, **kwargs)

    def _activation(self, activation: str):
        name = self.spec.activation if activation == "auto" else activation
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be 'auto', 'sigmoid' or 'identity', got {activation!r}")
        return ACTIVATIONS[name]


def _is_pair(item: Any) -> bool:
    """One (query, document) pair rather than a list of pairs, as CrossEncoder.predict decides."""
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item)


def _check_pairs(pairs: list) -> list[tuple[str, str]]:
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a (query, document) pair, got {type(pair).__name__}"
                            + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else ""))
        for j, text in enumerate(pair):
            if not isinstance(text, str):
                raise TypeError(f"pairs[{i}][{j}] is {type(text).__name__}, expected str")
    return [tuple(p) for p in pairs]
