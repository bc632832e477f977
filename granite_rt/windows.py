"""Long texts as overlapping token windows: split with character spans, and pool window vectors per text.

A text is tokenized once without truncation; its content tokens (special tokens excluded) are cut
into windows of ``window_tokens - specials`` tokens overlapping by ``window_stride``, and each window
gets the model's own special tokens back (the prefix/suffix of the full encoding), so a text that
fits in one window is encoded exactly as in truncate mode.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from granite_rt.arguments import is_int
from granite_rt.pooling import l2_normalize

LONG_TEXT_MODES = ("truncate", "window", "windows")


@dataclass(frozen=True)
class Window:
    """One window of one text: token ids ready for the model, and the character span it covers."""

    text_index: int
    ids: list[int]
    type_ids: list[int]
    span: tuple[int, int]


@dataclass(frozen=True)
class TextWindows:
    """``long_text="windows"`` result for one text: a vector per window and its (start, end) character span."""

    vectors: np.ndarray
    spans: list[tuple[int, int]]


def check_long_text(long_text: str) -> str:
    """``long_text`` itself when it names a mode; ValueError naming the argument otherwise."""
    if long_text not in LONG_TEXT_MODES:
        raise ValueError(f"long_text must be one of {', '.join(map(repr, LONG_TEXT_MODES))}, got {long_text!r}")
    return long_text


DEFAULT_WINDOW_TOKENS = 512


def window_sizes(window_tokens: int | None, window_stride: int | None, max_length: int) -> tuple[int, int]:
    """Validated (window_tokens, window_stride); defaults: min(512, max_length) tokens, stride window_tokens // 8."""
    window_tokens = min(DEFAULT_WINDOW_TOKENS, max_length) if window_tokens is None else window_tokens
    if not is_int(window_tokens) or not 3 <= window_tokens <= max_length:
        raise ValueError(f"window_tokens must be an int in 3..{max_length} (the model's max length, special tokens "
                         f"included), got {window_tokens!r}")
    stride = window_tokens // 8 if window_stride is None else window_stride
    if not is_int(stride) or not 0 <= stride < window_tokens:
        raise ValueError(f"window_stride (tokens shared by consecutive windows) must be an int in "
                         f"0..{window_tokens - 1} (below window_tokens={window_tokens}), got {window_stride!r}")
    return window_tokens, stride


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Start positions of windows of ``size`` tokens overlapping by ``stride``; the last one reaches the end."""
    step = size - stride
    starts = [0]
    while starts[-1] + size < n_tokens:
        starts.append(starts[-1] + step)
    return starts


def split(encodings: Sequence, window_tokens: int, window_stride: int) -> list[Window]:
    """Windows of every text, in text order, from untruncated ``tokenizers.Encoding`` objects (specials added)."""
    windows: list[Window] = []
    for index, enc in enumerate(encodings):
        special = np.asarray(enc.special_tokens_mask, dtype=bool)
        content = np.flatnonzero(~special)
        first, last = (int(content[0]), int(content[-1]) + 1) if content.size else (len(special), len(special))
        ids, types, offsets = enc.ids, enc.type_ids, enc.offsets
        prefix, suffix = slice(0, first), slice(last, len(ids))
        size = window_tokens - (first + len(ids) - last)
        if size < 1:
            raise ValueError(f"window_tokens={window_tokens} leaves no room for text between the model's "
                             f"{first + len(ids) - last} special tokens")
        if size - window_stride < 1:
            raise ValueError(f"window_stride={window_stride} must be below the {size} text tokens of a window "
                             f"(window_tokens={window_tokens} minus special tokens)")
        for start in window_starts(last - first, size, window_stride):
            body = slice(first + start, min(first + start + size, last))
            span = (offsets[body.start][0], offsets[body.stop - 1][1]) if body.stop > body.start else (0, 0)
            windows.append(Window(index, ids[prefix] + ids[body] + ids[suffix],
                                  types[prefix] + types[body] + types[suffix], span))
    return windows


def pool_windows(vectors: np.ndarray, text_index: Sequence[int], n_texts: int, normalize: bool) -> np.ndarray:
    """One vector per text: the mean of its windows' vectors, re-normalised when ``normalize``.

    A text with a single window keeps that window's vector unchanged (bit-identical to truncate mode).
    """
    owner = np.asarray(text_index, dtype=np.int64)
    counts = np.bincount(owner, minlength=n_texts)
    if np.any(counts == 0):
        raise ValueError(f"texts without windows: {np.flatnonzero(counts == 0).tolist()}")
    sums = np.zeros((n_texts, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors)
    pooled = (sums / counts[:, None]).astype(np.float32)
    pooled = l2_normalize(pooled) if normalize else pooled
    single = counts == 1
    _, first = np.unique(owner, return_index=True)
    pooled[single] = vectors[first[single]]
    return pooled


def group_windows(vectors: np.ndarray, windows: Sequence[Window], n_texts: int) -> list[TextWindows]:
    """``long_text="windows"``: the window vectors (any output precision) and spans of each text, in order."""
    groups: list[list[int]] = [[] for _ in range(n_texts)]
    for row, window in enumerate(windows):
        groups[window.text_index].append(row)
    return [TextWindows(vectors[rows], [windows[r].span for r in rows]) for rows in groups]


def warn_truncated(truncated: np.ndarray, max_length: int) -> None:
    """One warning per encode call naming how many (and which first) texts were cut at max_length."""
    where = np.flatnonzero(truncated)
    warnings.warn(f"{where.size} of {truncated.size} texts exceed max_length={max_length} tokens and were truncated "
                  f"(first at index {where[0]}); use long_text='window' to embed all of each text, or "
                  "return_truncation=True to get the mask instead of this warning", UserWarning, stacklevel=3)
