"""Output formats of embeddings: Matryoshka truncation and the ``precision`` of the returned vectors.

``precision`` is the format of the vectors ``encode`` returns (float32 … ubinary, with the semantics
and bit packing of sentence-transformers' ``quantize_embeddings``); it is unrelated to the compute
precision of the model artifact, which is the constructor's ``dtype``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from granite_rt.arguments import is_int
from granite_rt.pooling import l2_normalize

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def check_precision(precision: str) -> str:
    """``precision`` itself when it is a known output format; ValueError naming the argument otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (the output format; the compute "
                         f"precision of the model is the constructor's dtype), got {precision!r}")
    return precision


def output_dim(truncate_dim: int | None, dim: int, declared: Sequence[int] = ()) -> int:
    """The vector length after Matryoshka truncation, validated against the model's size and declared dims.

    Any dim in 1..dim is accepted; one the model was not trained for (not in ``declared``) gives a warning,
    since its vectors may be much worse than a declared dim's.
    """
    if truncate_dim is None:
        return dim
    if not is_int(truncate_dim) or not 1 <= truncate_dim <= dim:
        raise ValueError(f"truncate_dim must be None or an int in 1..{dim} (the model's dimension), "
                         f"got {truncate_dim!r}")
    if truncate_dim != dim and int(truncate_dim) not in declared:
        why = (f"the model declares Matryoshka dims {sorted(declared, reverse=True)}" if declared
               else "the model declares no Matryoshka training")
        warnings.warn(f"truncate_dim={truncate_dim}: {why}; truncated vectors may retrieve poorly",
                      UserWarning, stacklevel=3)
    return int(truncate_dim)


def truncate(vectors: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """Keep the first ``dim`` dimensions, then L2-normalise rows when asked (float32, C-contiguous)."""
    vectors = np.asarray(vectors, dtype=np.float32)[..., :dim]
    if normalize:
        return l2_normalize(vectors)
    return np.ascontiguousarray(vectors)


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """(2, dim) per-dimension minimum and maximum of float embeddings: pass as ``ranges`` for int8/uint8."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"calibration needs a (n >= 2, dim) array of float embeddings, got shape {embeddings.shape}")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float embeddings (n, dim) in the output format ``precision``, as sentence-transformers' quantize_embeddings.

    int8/uint8 map each dimension's [min, max] (``ranges``, shape (2, dim); computed from ``embeddings``
    when None, which needs at least two rows) onto 256 buckets; binary/ubinary pack the sign bits, 8
    dims per byte (binary as int8 = packed - 128).
    """
    check_precision(precision)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype.kind not in "f":
        raise TypeError(f"embeddings to quantize must be float, got {embeddings.dtype}")
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision == "float16":
        return embeddings.astype(np.float16)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    dim = embeddings.shape[-1]
    if embeddings.size == 0:
        return np.zeros(embeddings.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    ranges = _check_ranges(ranges, dim, precision) if ranges is not None else _ranges_from(embeddings, precision)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)


def _check_ranges(ranges: np.ndarray, dim: int, precision: str) -> np.ndarray:
    ranges = np.asarray(ranges)
    if ranges.shape != (2, dim) or ranges.dtype.kind not in "fiu":
        raise ValueError(f"ranges for precision={precision!r} must be a numeric (2, {dim}) array of per-dimension "
                         f"minima and maxima (see calibration_ranges), got shape {ranges.shape}")
    if not np.all(np.isfinite(ranges)):
        raise ValueError("ranges must be finite")
    return ranges.astype(np.float32, copy=False)


def _ranges_from(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """Ranges from the embeddings themselves, as sentence-transformers does when given none."""
    if embeddings.ndim == 1 or embeddings.shape[0] < 2:
        raise ValueError(f"precision={precision!r} of a single embedding needs ranges: pass ranges= "
                         "(calibration_ranges of representative embeddings)")
    if embeddings.shape[0] < 100:
        warnings.warn(f"precision={precision!r}: quantization ranges computed from only {embeddings.shape[0]} "
                      "embeddings; pass ranges= from a representative set for stable buckets",
                      UserWarning, stacklevel=3)
    return calibration_ranges(embeddings)
