"""Pooling of token vectors into one vector per text, as sentence-transformers' Pooling module does.

Padded positions are excluded with ``np.where`` (never by multiplying: a NaN or inf in a padded
position times 0 would still poison the sum).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from granite_rt.errors import UnsupportedModelError


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """(batch, seq, hidden) token vectors + (batch, seq) mask → (batch, hidden × len(modes)) float32.

    A graph exported first-position-only (export/first_position.py: a ModernBERT read by CLS pooling)
    returns (batch, 1, hidden); only CLS pooling of right-padded rows reads that, anything else is refused.
    """
    hidden = np.asarray(hidden, dtype=np.float32)
    valid = np.asarray(mask).astype(bool)
    if hidden.shape[1] != valid.shape[1]:
        if hidden.shape[1] != 1 or tuple(modes) != ("cls",) or not valid[:, 0].all():
            raise UnsupportedModelError(
                f"the model returned {hidden.shape[1]} position(s) for inputs of {valid.shape[1]} tokens: a graph "
                f"that returns the first position alone can only be read by CLS pooling of right-padded inputs "
                f"(pooling here: {'+'.join(modes)}); export the model again for this pooling")
        valid = valid[:, :1]
    rows = np.arange(hidden.shape[0])
    keep = valid[..., None]
    counts = np.maximum(valid.sum(axis=1, keepdims=True, dtype=np.float32), 1e-9)
    out = []
    for mode in modes:
        if mode == "cls":  # first unmasked position (0 with right padding)
            out.append(hidden[rows, valid.argmax(axis=1)])
        elif mode == "lasttoken":
            last = valid.shape[1] - 1 - valid[:, ::-1].argmax(axis=1)
            out.append(np.where(valid[rows, last][:, None], hidden[rows, last], 0.0))
        elif mode == "max":
            out.append(np.where(keep, hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = np.where(keep, hidden, 0.0).sum(axis=1)
            out.append(total / (counts if mode == "mean" else np.sqrt(counts)))
        elif mode == "weightedmean":  # weights 1..seq along real tokens (right padding)
            weights = np.where(valid, np.arange(1, valid.shape[1] + 1, dtype=np.float32), 0.0)
            total = np.where(keep, hidden * weights[..., None], 0.0).sum(axis=1)
            out.append(total / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9))
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return np.concatenate(out, axis=-1).astype(np.float32, copy=False)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as torch.nn.functional.normalize."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
