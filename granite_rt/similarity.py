"""Search helpers on encode's outputs: cosine/dot for float vectors, Hamming for packed binary, float rescoring.

The usual compact-index recipe: find ``top_k × k`` candidates by Hamming distance on binary vectors
(32× smaller than float32), then rescore only those candidates with float vectors.
"""

from __future__ import annotations

import numpy as np

from granite_rt.arguments import is_int

# Rows of the (queries × corpus × bytes) XOR block computed at once, to bound memory on big corpora.
_BLOCK_BYTES = 1 << 26


def dot_score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) dot products of float vectors a (n, dim) and b (m, dim); 1-D inputs count as one row."""
    a, b = _float_rows(a, "a"), _float_rows(b, "b")
    _same_dim(a, b)
    return a @ b.T


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities of float vectors (zero vectors score 0)."""
    a, b = _float_rows(a, "a"), _float_rows(b, "b")
    _same_dim(a, b)
    return _unit(a) @ _unit(b).T


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) number of differing bits between packed binary vectors (precision "binary" or "ubinary").

    Both must use the same packing; int8 "binary" (packed - 128) flips the top bit of every byte on
    both sides, which XOR cancels, so distances are the same as on the ubinary vectors.
    """
    a, b = _packed_rows(a, "a"), _packed_rows(b, "b")
    _same_dim(a, b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    rows = max(1, _BLOCK_BYTES // max(1, b.size))
    for start in range(0, a.shape[0], rows):
        block = np.bitwise_xor(a[start:start + rows, None, :], b[None, :, :])
        out[start:start + rows] = np.bitwise_count(block).sum(axis=-1, dtype=np.int32)
    return out


def hamming_search(queries: np.ndarray, corpus: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances (n, k) of the ``top_k`` corpus vectors nearest by Hamming distance, nearest first."""
    distances = hamming_distance(queries, corpus)
    return _top_k(-distances, top_k, "top_k", lambda idx: (idx, np.take_along_axis(distances, idx, axis=1)))


def rescore(queries: np.ndarray, candidates: np.ndarray, corpus: np.ndarray, top_k: int | None = None,
            similarity: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate indices (n, c) by float similarity of ``queries`` (n, dim) to ``corpus`` (N, dim).

    Returns (indices, scores), each (n, top_k or c), best first; the corpus vectors are float (e.g.
    kept on disk while the binary index lives in memory).
    """
    queries = _float_rows(queries, "queries")
    corpus = _float_rows(corpus, "corpus")
    _same_dim(queries, corpus)
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or candidates.shape[0] != queries.shape[0] or candidates.dtype.kind not in "iu":
        raise ValueError(f"candidates must be an int array (n_queries={queries.shape[0]}, c), "
                         f"got {candidates.dtype} {candidates.shape}")
    if candidates.size and (candidates.min() < 0 or candidates.max() >= corpus.shape[0]):
        raise ValueError(f"candidates must index the corpus (0..{corpus.shape[0] - 1})")
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    if similarity == "cosine":
        queries, corpus = _unit(queries), _unit(corpus)
    scores = np.einsum("qd,qcd->qc", queries, corpus[candidates])
    k = candidates.shape[1] if top_k is None else top_k
    return _top_k(scores, k, "top_k",
                  lambda idx: (np.take_along_axis(candidates, idx, 1), np.take_along_axis(scores, idx, 1)))


def _top_k(scores: np.ndarray, k: int, what: str, pick):
    """``pick(column indices of the k best scores per row, best first)``; stable for ties."""
    if not is_int(k) or k < 1:
        raise ValueError(f"{what} must be an int >= 1, got {k!r}")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pick(order)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _float_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{what} must be float vectors, got {x.dtype} (use hamming_distance for packed binary)")
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2:
        raise ValueError(f"{what} must be a (n, dim) array, got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def _packed_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.uint8, np.int8):
        raise TypeError(f"{what} must be packed binary vectors (uint8 'ubinary' or int8 'binary'), got {x.dtype}")
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2:
        raise ValueError(f"{what} must be a (n, bytes) array, got shape {x.shape}")
    return x.view(np.uint8)


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"vector lengths differ: {a.shape[1]} vs {b.shape[1]}")
