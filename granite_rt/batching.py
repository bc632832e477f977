"""Length-sorted batches and padding: each batch holds texts of similar length, results come back in input order.

Sorting by length and cutting batches where the lengths step down keeps padding (wasted compute) small;
since pooling ignores padded positions, a text's output does not depend on which neighbours share its batch.

Where a backend's result for a row changes with the padding after it (OpenVINO INT8: measured on
all-MiniLM-L6-v2, fp32 rows padded by a longer neighbour differ by ~1e-7, which moves a few INT8
activations across a rounding step, up to 2.4e-3 in the vector), ``pad_to_multiple_of`` fixes each
row's padded width from its own length alone: rows are batched only with rows of the same width, so
a text gives the same bits alone and in any batch (rows of equal width do not interact).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from granite_rt.arguments import is_int
from granite_rt.backends.base import SideBySide


# How far above an even share the busiest of the side-by-side workers may be before a call runs its batches one
# after another on every thread instead (balanced_batches): one-thread runs side by side took 0.73-0.97x the time of
# threaded runs on evenly cut calls, and 1.4-1.8x where one worker held most of the work (onnxruntime INT8, 97m shape,
# Zen 4, 2 cores, 2026-12-07; docs/runtime.md).
SIDE_BY_SIDE_SLACK = 0.1
# Token budget: padded tokens (rows × longest) per batch, so long texts go in small batches (a longer one alone).
MAX_BATCH_TOKENS = 16_384
# Attention budget: rows × longest² (attention scores per head and layer grow with the square of the length),
# so texts of 8k tokens and more go one by one and peak memory is that of the longest single text.
MAX_BATCH_ATTENTION = 8_192 ** 2
# What one more batch costs on a CPU, in tokens of compute: a pass over the graph's ~900 nodes (~6 ms on
# the 97m model on 2 cores) takes about as long as 15 tokens of a 512-token batch. Cutting batches at
# length steps trades that against padding: 64 Cranfield abstracts in batches of 32 were 44 % padding
# and took 9.98 s (97m INT8, 2 cores), cut this way 0.9 % and 5.27 s (overhead 64: 5.63 s, 256: 5.85 s).
BATCH_OVERHEAD_TOKENS = 16


def batch_overhead_tokens(device: str) -> int:
    """The per-batch cost to plan with on ``device``: CPU as measured; on accelerators a launch costs more
    than padding, so as many tokens as a full batch (fewest batches; not measured here: no GPU)."""
    return BATCH_OVERHEAD_TOKENS if device == "cpu" else MAX_BATCH_TOKENS


@dataclass(frozen=True)
class ShapeBuckets:
    """The (rows, width) shapes a backend may be given: widths padded up to ``widths``, row counts from ``rows``.

    Padding changes no result (pooling and attention ignore masked positions), but every distinct input
    shape costs a backend memory it keeps: OpenVINO's CPU plugin caches kernels and buffers per shape
    (all-MiniLM-L6-v2 INT8, 2 cores: 216 -> 328 MiB over 100 distinct shapes of 1-8 rows x 3-64 tokens, no
    plateau; the same calls padded to 16 shapes: 217 -> 228 MiB). A long-running process (the server) therefore
    pads to a fixed set, so its memory is bounded by ``len(list(shapes()))`` whatever the traffic.
    """

    widths: tuple[int, ...]     # ascending; the last is the model's max_length
    rows: tuple[int, ...]       # ascending; the last is the batch size

    @classmethod
    def geometric(cls, max_length: int, batch_size: int, steps_per_octave: int = 4,
                  min_width: int = 16) -> "ShapeBuckets":
        """Widths min_width·2^(k/steps) rounded to multiples of 4 (16, 20, 24, 28, 32, 40, ... at 4 steps:
        at most 22 % padding past 16 tokens, 9 % on average), capped by ``max_length``; rows 1, 2, 4, ...
        up to ``batch_size``."""
        if max_length < 1 or batch_size < 1 or steps_per_octave < 1 or min_width < 1:
            raise ValueError("max_length, batch_size, steps_per_octave and min_width must be >= 1")
        widths, k = set(), 0
        while (width := max(4, round(min_width * 2 ** (k / steps_per_octave) / 4) * 4)) < max_length:
            widths.add(width)
            k += 1
        rows = {min(2 ** i, batch_size) for i in range(batch_size.bit_length() + 1)}
        return cls(tuple(sorted(widths | {max_length})), tuple(sorted(rows)))

    def width(self, longest: int) -> int:
        """The bucket a batch whose longest input has ``longest`` tokens is padded to."""
        return next((w for w in self.widths if w >= longest), longest)

    def shapes(self, max_tokens: int = MAX_BATCH_TOKENS) -> Iterator[tuple[int, int]]:
        """Every (rows, width) batch ``length_sorted_batches`` can form under these buckets."""
        for width in self.widths:
            for rows in self.rows:
                if rows == 1 or rows <= _row_limit(width, max_tokens):
                    yield rows, width


def padded_width(length: int, pad_to_multiple_of: int) -> int:
    """The width a row of ``length`` tokens is padded to when its width may depend only on itself."""
    if not pad_to_multiple_of:
        return int(length)
    return -(-max(int(length), 1) // pad_to_multiple_of) * pad_to_multiple_of


def row_widths(lengths: Sequence[int], buckets: ShapeBuckets | None = None, pad_to_multiple_of: int = 0) -> np.ndarray:
    """The width each row is padded to at least: its length rounded up to ``pad_to_multiple_of``, then to its
    bucket."""
    widths = [padded_width(n, pad_to_multiple_of) for n in lengths]
    return np.asarray([buckets.width(w) for w in widths] if buckets is not None else widths, dtype=np.int64)


def _row_limit(width: int, max_tokens: int) -> int:
    return min(max_tokens // width, MAX_BATCH_ATTENTION // width ** 2)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS,
                          overhead_tokens: int = BATCH_OVERHEAD_TOKENS,
                          buckets: ShapeBuckets | None = None, pad_to_multiple_of: int = 0) -> list[np.ndarray]:
    """Indices of the inputs, longest first, in batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens.

    Of all ways to cut the length-sorted inputs into such batches, the one with the fewest padded tokens
    plus ``overhead_tokens`` per batch (dynamic programming, ties to bigger batches first): a batch ends
    where the next texts are much shorter, instead of padding them all to the longest one. With
    ``buckets``, padding is counted up to the bucket width and batches hold only ``buckets.rows`` rows.
    With ``pad_to_multiple_of`` k > 0 every row's width depends on its own length alone (its bucket, else
    ``padded_width(length, k)``) and a batch holds only rows of one width (module docstring).
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if pad_to_multiple_of:
        lengths = row_widths(lengths, buckets, pad_to_multiple_of)
    order = np.argsort(-lengths, kind="stable")
    longest = np.maximum(lengths[order], 1)
    n = len(order)
    cost = np.zeros(n + 1)                      # cost[i]: the least cost of batching order[i:]
    size = np.ones(n, dtype=np.int64)           # size[i]: the batch that starts at i in that best cut
    allowed = np.asarray(buckets.rows[::-1], dtype=np.int64) if buckets is not None else None
    for i in range(n - 1, -1, -1):
        top = int(longest[i]) if buckets is None else buckets.width(int(longest[i]))
        limit = max(1, min(batch_size, _row_limit(top, max_tokens), n - i))
        if pad_to_multiple_of:  # only rows of this width
            limit = min(limit, int(np.searchsorted(-longest, -int(longest[i]), side="right")) - i)
        # biggest first: argmin keeps the first of equal costs
        sizes = np.arange(limit, 0, -1) if allowed is None else allowed[allowed <= limit]
        totals = overhead_tokens + sizes * top + cost[i + sizes]
        best = int(np.argmin(totals))
        size[i], cost[i] = sizes[best], totals[best]
    batches, start = [], 0
    while start < n:
        batches.append(order[start:start + size[start]])
        start += int(size[start])
    return batches


def pad_batch(encodings: Sequence, pad_id: int, buckets: ShapeBuckets | None = None,
              pad_to_multiple_of: int = 0) -> dict[str, np.ndarray]:
    """input_ids, attention_mask, token_type_ids as int64 (batch, longest), right-padded as transformers pads
    (the longest rounded up to ``pad_to_multiple_of``, then to its bucket width with ``buckets``)."""
    width = padded_width(max(len(e.ids) for e in encodings), pad_to_multiple_of)
    width = buckets.width(width) if buckets is not None else width
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def balanced_batches(lengths: Sequence[int], batch_size: int, workers: int, *,
                     overhead_tokens: int = BATCH_OVERHEAD_TOKENS, buckets: ShapeBuckets | None = None,
                     pad_to_multiple_of: int = 0) -> list[np.ndarray] | None:
    """Batches for ``workers`` runs side by side (``SideBySide``), costliest first, or None when no cut keeps
    every worker busy to within ``SIDE_BY_SIDE_SLACK`` of an even share, or keeps the batches in flight within
    the padded tokens of one batch (``MAX_BATCH_TOKENS``).

    A batch is capped at an even share of the call's rows and padded tokens, so a few long texts are split
    instead of one worker running them alone; the batches go to the workers in order of cost (rows × width),
    each to whichever frees first. When one row outweighs an even share (a long text among short ones) there
    is no such cut and the call runs as one threaded batch after another.

    A batch is also capped at ``MAX_BATCH_TOKENS / workers`` padded tokens, and a row wider than that runs the
    threaded way: ``workers`` batches at once then hold no more padded tokens than one threaded batch, however
    many threads. 400 Cranfield abstracts on 8 one-thread runs peaked at 630-705 MiB RSS uncapped, 600-620 capped,
    300 one batch after another (97m INT8; 2-core Zen 4 standing in for 8 cores, 2026-12-07; docs/runtime.md); on 2
    threads the cap changes only calls of over 16,384 tokens (200 abstracts: 0.994x the time uncapped).
    """
    rows = max(1, -(-len(lengths) // workers))
    widths = row_widths(lengths, buckets, pad_to_multiple_of)
    in_flight = MAX_BATCH_TOKENS // workers
    if int(widths.max()) > in_flight:
        return None
    share = -(-int(widths.sum()) // workers)
    batches = length_sorted_batches(lengths, min(batch_size, rows), max_tokens=min(in_flight, share),
                                    overhead_tokens=overhead_tokens, buckets=buckets,
                                    pad_to_multiple_of=pad_to_multiple_of)
    costs = np.asarray([len(b) * int(widths[b].max()) for b in batches], dtype=np.float64)
    order = np.argsort(-costs, kind="stable")
    loads = np.zeros(workers)
    for i in order:  # each batch to the worker that frees first, as a thread pool hands them out
        loads[np.argmin(loads)] += costs[i]
    if loads.max() > (1 + SIDE_BY_SIDE_SLACK) * costs.sum() / workers:
        return None
    return [batches[i] for i in order]


def map_batches(encodings: Sequence, batch_size: int, pad_id: int,
                run: Callable[[Mapping[str, np.ndarray]], np.ndarray],
                progress: Callable[[int, int], None] | None = None, workers: int = 1,
                overhead_tokens: int = BATCH_OVERHEAD_TOKENS, buckets: ShapeBuckets | None = None,
                pad_to_multiple_of: int = 0, side_by_side: SideBySide | None = None,
                pool: Executor | None = None) -> np.ndarray:
    """Apply ``run`` (padded batch → one row per input) over length-sorted batches; rows in input order.

    ``progress(done, total)`` is called after each batch. ``workers`` > 1 keeps that many batches in
    flight on a thread pool (the backends release the GIL while they compute). ``overhead_tokens``,
    ``buckets`` and ``pad_to_multiple_of``: see ``length_sorted_batches``. ``side_by_side``: a second way
    to run batches, used only when the call forms more than one batch (``SideBySide``). ``pool``: the threads
    batches in flight run on (a model keeps one set for its lifetime), at least ``workers`` of them; None: a pool
    for this call.

    Without ``buckets``, ``workers`` > 1 caps the batch at ``ceil(len(encodings) / workers)`` rows so
    a call that would form one batch still feeds every stream: on Zen 4 (2 cores, avx512_vnni/bf16)
    OpenVINO INT8+bf16 in THROUGHPUT mode ran 8×512 tokens in 0.920 s as one batch on one stream
    and 0.517 s as two batches of 4. Fixed shape buckets keep their batch sizes.
    """
    out: np.ndarray | None = None
    lengths = [len(e.ids) for e in encodings]
    if workers > 1 and buckets is None:
        batch_size = min(batch_size, max(1, -(-len(encodings) // workers)))
    batches = length_sorted_batches(lengths, batch_size, overhead_tokens=overhead_tokens, buckets=buckets,
                                    pad_to_multiple_of=pad_to_multiple_of)
    if side_by_side is not None and len(batches) > 1:
        balanced = balanced_batches(lengths, batch_size, side_by_side.workers, overhead_tokens=overhead_tokens,
                                    buckets=buckets, pad_to_multiple_of=pad_to_multiple_of)
        if balanced is not None:
            run, workers, batches = side_by_side.run, side_by_side.workers, balanced

    def run_batch(index: np.ndarray) -> np.ndarray:
        return run(pad_batch([encodings[i] for i in index], pad_id, buckets, pad_to_multiple_of))

    own_pool, futures = None, []
    if workers > 1 and len(batches) > 1:
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            pool = own_pool = ThreadPoolExecutor(min(workers, len(batches)), thread_name_prefix="granite-rt")
        futures = [pool.submit(run_batch, batch) for batch in batches]  # at most the pool's threads at once
        results: Iterator[np.ndarray] = (future.result() for future in futures)  # in order
    else:
        results = map(run_batch, batches)
    try:
        for done, (index, rows) in enumerate(zip(batches, results), 1):
            if out is None:
                out = np.empty((len(encodings),) + rows.shape[1:], dtype=rows.dtype)
            out[index] = rows
            if progress is not None:
                progress(done, len(batches))
    finally:
        for future in futures:  # after an error or a cancel: the batches not yet started never run
            future.cancel()
        if own_pool is not None:
            own_pool.shutdown()
    if out is None:
        raise ValueError("map_batches needs at least one input")
    return out
