"""granite_rt.batching.ShapeBuckets: batches padded to a fixed set of (rows, width) shapes, results unchanged."""

from __future__ import annotations

import random

import numpy as np
import pytest

from granite_rt.batching import ShapeBuckets, length_sorted_batches, map_batches


class Enc:
    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.ids = [rng.randint(5, 99) for _ in range(n)]
        self.type_ids = [0] * n


def test_geometric_buckets_cover_every_length_with_bounded_padding():
    buckets = ShapeBuckets.geometric(512, 32)
    assert buckets.rows == (1, 2, 4, 8, 16, 32)
    assert buckets.widths[0] == 16 and buckets.widths[-1] == 512
    for n in range(1, 513):
        width = buckets.width(n)
        assert width >= n and width in buckets.widths
        assert n <= 16 or width <= 1.22 * n                # at most 22 % padding past the first bucket
    assert ShapeBuckets.geometric(100, 12).rows == (1, 2, 4, 8, 12)
    assert ShapeBuckets.geometric(100, 12).widths[-1] == 100
    with pytest.raises(ValueError):
        ShapeBuckets.geometric(0, 32)


def test_bucketed_batches_use_only_the_bucket_shapes():
    buckets = ShapeBuckets.geometric(512, 32)
    allowed = set(buckets.shapes())
    rng = random.Random(3)
    seen = set()
    for _ in range(30):
        lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 90))]
        for batch in length_sorted_batches(lengths, 32, buckets=buckets):
            shape = (len(batch), buckets.width(max(lengths[i] for i in batch)))
            assert shape in allowed, shape
            seen.add(shape)
        assert sorted(i for b in length_sorted_batches(lengths, 32, buckets=buckets) for i in b) == \
            list(range(len(lengths)))
    assert len(allowed) == 126 and len(seen) > 20


def test_bucketed_map_batches_pads_to_buckets_and_returns_the_same_rows():
    encodings = [Enc(n, i) for i, n in enumerate([3, 17, 40, 41, 5, 90, 33, 2, 64, 65, 12])]
    shapes = []

    def masked_sum(batch):                  # padding-invariant: ignores masked positions
        shapes.append(batch["input_ids"].shape)
        return (batch["input_ids"] * batch["attention_mask"]).sum(axis=1, keepdims=True).astype(np.float32)

    buckets = ShapeBuckets.geometric(128, 4)
    plain = map_batches(encodings, 4, pad_id=0, run=masked_sum)
    shapes.clear()
    bucketed = map_batches(encodings, 4, pad_id=0, run=masked_sum, buckets=buckets)
    np.testing.assert_array_equal(bucketed, plain)
    assert all(rows in buckets.rows and width in buckets.widths for rows, width in shapes), shapes
