"""Window splitting, window pooling and the token budget, against hand computations (no model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from granite_rt.batching import length_sorted_batches
from granite_rt.windows import (check_long_text, group_windows, pool_windows, split, window_sizes,
                                window_starts)


@dataclass
class FakeEncoding:
    """What split reads from a tokenizers.Encoding: [CLS] t0..t(n-1) [SEP], token i spans chars 2i..2i+1."""

    n: int

    @property
    def ids(self):
        return [101] + list(range(1000, 1000 + self.n)) + [102]

    @property
    def type_ids(self):
        return [0] * (self.n + 2)

    @property
    def special_tokens_mask(self):
        return [1] + [0] * self.n + [1]

    @property
    def offsets(self):
        return [(0, 0)] + [(2 * i, 2 * i + 1) for i in range(self.n)] + [(0, 0)]


def test_window_starts_by_hand():
    assert window_starts(10, 4, 1) == [0, 3, 6]        # windows 0-4, 3-7, 6-10
    assert window_starts(11, 4, 1) == [0, 3, 6, 9]     # the last one is short: 9-11
    assert window_starts(4, 4, 0) == [0]
    assert window_starts(0, 4, 0) == [0]


def test_split_keeps_special_tokens_and_character_spans():
    windows = split([FakeEncoding(3), FakeEncoding(11)], window_tokens=6, window_stride=1)
    # Text 0 fits in one window: its full encoding, unchanged.
    assert windows[0].text_index == 0 and windows[0].ids == FakeEncoding(3).ids and windows[0].span == (0, 5)
    rest = [w for w in windows if w.text_index == 1]
    body = [[t - 1000 for t in w.ids[1:-1]] for w in rest]
    assert body == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10]]
    assert all(w.ids[0] == 101 and w.ids[-1] == 102 and len(w.type_ids) == len(w.ids) for w in rest)
    assert [w.span for w in rest] == [(0, 7), (6, 13), (12, 19), (18, 21)]


def test_split_rejects_stride_that_never_advances():
    with pytest.raises(ValueError, match="window_stride"):
        split([FakeEncoding(20)], window_tokens=6, window_stride=4)  # 4 text tokens per window


def test_pool_windows_by_hand():
    v = np.array([[3, 4], [0, 1], [1, 0], [5, 5]], dtype=np.float32)
    pooled = pool_windows(v, [0, 0, 1, 2], 3, normalize=True)
    mean0 = np.array([1.5, 2.5]) / np.hypot(1.5, 2.5)
    np.testing.assert_allclose(pooled[0], mean0, rtol=1e-6)
    np.testing.assert_array_equal(pooled[1], v[2])          # one window: unchanged
    np.testing.assert_array_equal(pooled[2], v[3])          # one window: unchanged, even when not unit length
    np.testing.assert_allclose(pool_windows(v, [1, 0, 1, 0], 2, normalize=False), [[2.5, 3], [2, 2]])
    with pytest.raises(ValueError, match="without windows"):
        pool_windows(v, [0, 0, 2, 2], 3, normalize=True)


def test_group_windows_in_text_order():
    windows = split([FakeEncoding(11), FakeEncoding(2)], window_tokens=6, window_stride=1)
    vectors = np.arange(len(windows) * 2, dtype=np.float32).reshape(-1, 2)
    groups = group_windows(vectors, windows, 2)
    assert [len(g.spans) for g in groups] == [4, 1]
    np.testing.assert_array_equal(groups[1].vectors, vectors[4:5])
    assert groups[0].spans[0] == (0, 7)


@pytest.mark.parametrize("tokens, stride, name", [(2, 0, "window_tokens"), (129, 0, "window_tokens"),
                                                  (16, 16, "window_stride"), (16, -1, "window_stride"),
                                                  ("16", 0, "window_tokens"), (16, 2.0, "window_stride")])
def test_window_sizes_reject_bad_values(tokens, stride, name):
    with pytest.raises(ValueError, match=name):
        window_sizes(tokens, stride, max_length=128)


def test_window_sizes_default_stride_and_modes():
    assert window_sizes(512, None, 8192) == (512, 64)
    assert window_sizes(3, 0, 8192) == (3, 0)
    with pytest.raises(ValueError, match="long_text"):
        check_long_text("chunks")


def test_token_budget_puts_long_inputs_in_small_batches():
    lengths = [32768, 100, 8192, 8192, 8192, 5] + [512] * 40
    batches = length_sorted_batches(lengths, batch_size=32, max_tokens=16384)
    assert [b.tolist() for b in batches[:4]] == [[0], [2], [3], [4]]   # 8k and longer: one by one (attention budget)
    assert [b.tolist() for b in length_sorted_batches([4096] * 5, 32)] == [[0, 1, 2, 3], [4]]  # 4 × 4096² cells
    assert all(len(b) * max(lengths[i] for i in b) <= 16384 or len(b) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert max(len(b) for b in batches) == 32
