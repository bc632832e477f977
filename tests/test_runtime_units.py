"""Small pieces against sentence-transformers' own modules: pooling modes, max length, batching."""

from __future__ import annotations

import numpy as np
import pytest

from granite_rt.batching import length_sorted_batches, map_batches
from granite_rt.errors import UnsupportedModelError
from granite_rt.model_folder import POOLING_MODES, reference_max_length
from granite_rt.pooling import l2_normalize, pool


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_matches_sentence_transformers(mode):
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 7, 8)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6], dtype=np.int64)
    reference = Pooling(8, pooling_mode=mode)({"token_embeddings": torch.from_numpy(hidden),
                                              "attention_mask": torch.from_numpy(mask)})["sentence_embedding"]
    poisoned = np.where(mask[..., None].astype(bool), hidden, np.nan)  # padded positions must not leak
    np.testing.assert_allclose(pool(poisoned, mask, (mode,)), reference.numpy(), atol=1e-6)


def test_several_modes_concatenate_and_normalize():
    hidden = np.arange(24, dtype=np.float32).reshape(1, 3, 8)
    mask = np.array([[1, 1, 0]])
    out = pool(hidden, mask, ("cls", "mean"))
    assert out.shape == (1, 16)
    np.testing.assert_allclose(out[0, :8], hidden[0, 0])
    np.testing.assert_allclose(out[0, 8:], hidden[0, :2].mean(axis=0))
    unit = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("sbert, tok, config, expected", [
    ({"max_seq_length": 256}, {"model_max_length": 512}, {"max_position_embeddings": 512}, 256),
    ({"max_seq_length": 1024}, {"model_max_length": 512}, {"max_position_embeddings": 512}, 1024),  # uncapped, as ST
    ({}, {"model_max_length": 512}, {"max_position_embeddings": 514}, 512),
    ({}, {"model_max_length": 8192}, {"max_position_embeddings": 512}, 512),
    ({}, {}, {"max_position_embeddings": 8192}, 8192),
    ({"max_seq_length": 128, "processor_kwargs": {"model_max_length": 64}}, {}, {}, 64),
])
def test_reference_max_length(sbert, tok, config, expected):
    assert reference_max_length(sbert, tok, config) == expected


def test_no_max_length_is_an_error():
    with pytest.raises(UnsupportedModelError, match="no max length"):
        reference_max_length({}, {}, {})


def test_batches_are_length_sorted_and_results_come_back_in_order():
    lengths = [3, 9, 1, 9, 5, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    assert [list(b) for b in batches] == [[1, 3, 6], [4, 0], [5, 2]]  # 9 9 7 | 5 3 | 2 1: less padding than 5 3 2 | 1

    class Enc:
        def __init__(self, n: int) -> None:
            self.ids, self.type_ids = list(range(1, n + 1)), [0] * n

    seen = []

    def run(batch):
        seen.append(batch["input_ids"].shape)
        return batch["attention_mask"].sum(axis=1, keepdims=True)

    out = map_batches([Enc(n) for n in lengths], 3, pad_id=0, run=run)
    assert out[:, 0].tolist() == lengths
    assert seen == [(3, 9), (2, 5), (2, 2)]  # each batch padded only to its own longest text


def test_batches_in_flight_on_several_workers_come_back_in_input_order():
    import threading
    import time

    class Enc:
        def __init__(self, n: int) -> None:
            self.ids, self.type_ids = list(range(1, n + 1)), [0] * n

    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 40, size=50)]
    running, peak, lock, done = [0], [0], threading.Lock(), []

    def run(batch):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002 * (batch["input_ids"].shape[1] % 5))  # batches finish out of order
        with lock:
            running[0] -= 1
        return batch["attention_mask"].sum(axis=1, keepdims=True)

    encodings = [Enc(n) for n in lengths]
    out = map_batches(encodings, 4, pad_id=0, run=run, workers=3, progress=lambda d, t: done.append((d, t)))
    assert out[:, 0].tolist() == lengths
    assert 1 < peak[0] <= 3
    assert done == [(i, 13) for i in range(1, 14)]
    np.testing.assert_array_equal(out, map_batches(encodings, 4, pad_id=0, run=run))


@pytest.mark.parametrize("config, expected", [
    ({"num_labels": 1}, "sigmoid"),
    ({"id2label": {"0": "a", "1": "b", "2": "c"}}, "identity"),
    ({"num_labels": 1, "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}, "identity"),
    ({"num_labels": 1, "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Tanh"}}, "tanh"),
    ({"num_labels": 1, "sbert_ce_default_activation_function": "torch.nn.modules.activation.Sigmoid"}, "sigmoid"),
])
def test_reranker_activation_as_cross_encoder(config, expected):
    from granite_rt.model_folder import _activation

    assert _activation(config) == expected


def test_untrusted_or_unknown_activation():
    from granite_rt.model_folder import _activation

    with pytest.warns(UserWarning, match="not a torch activation"):
        assert _activation({"num_labels": 1, "sentence_transformers": {"activation_fn": "mypkg.Custom"}}) == "sigmoid"
    with pytest.raises(UnsupportedModelError, match="torch.nn.Softsign"):
        _activation({"sentence_transformers": {"activation_fn": "torch.nn.Softsign"}})


def test_declared_activation_is_applied(tiny_reranker_folders, tmp_path):
    import json
    import shutil
    from pathlib import Path

    from granite_rt import Reranker

    folder = Path(shutil.copytree(tiny_reranker_folders["hub"], tmp_path / "rr"))
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (folder / "config.json").write_text(json.dumps(config))
    pairs = [("water", "H2O"), ("water", "fox")]
    rr = Reranker(folder, backend="onnx")
    assert rr.info["activation"] == "identity"
    np.testing.assert_array_equal(rr.predict(pairs), rr.predict(pairs, activation="identity"))


def _padded_cost(batches, lengths, overhead):
    return sum(overhead + len(b) * max(max(lengths[i] for i in b), 1) for b in batches)


def _best_cut_cost(sorted_lengths, batch_size, overhead):
    """Brute force: every way to cut the sorted lengths into runs of at most ``batch_size``."""
    n = len(sorted_lengths)
    best = None
    for mask in range(1 << max(n - 1, 0)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        runs = [sorted_lengths[a:b] for a, b in zip(cuts, cuts[1:])]
        if any(len(r) > batch_size for r in runs):
            continue
        cost = sum(overhead + len(r) * max(r[0], 1) for r in runs)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_batches_cut_where_padding_costs_more_than_a_batch(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 600, int(rng.integers(1, 9))).tolist()
    batch_size, overhead = int(rng.integers(1, 5)), int(rng.choice([0, 16, 200]))
    batches = length_sorted_batches(lengths, batch_size, overhead_tokens=overhead)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(len(b) <= batch_size for b in batches)
    order = np.concatenate(batches)
    assert all(lengths[a] >= lengths[b] for a, b in zip(order, order[1:]))  # longest first: runs of the sorted order
    assert _padded_cost(batches, lengths, overhead) == _best_cut_cost(sorted(lengths, reverse=True), batch_size, overhead)


def test_cpu_cuts_mixed_lengths_and_accelerators_keep_full_batches():
    from granite_rt.batching import MAX_BATCH_TOKENS, batch_overhead_tokens

    lengths = [600, 590, 300, 290, 100, 95]
    cpu = length_sorted_batches(lengths, 32, overhead_tokens=batch_overhead_tokens("cpu"))
    assert [b.tolist() for b in cpu] == [[0, 1], [2, 3], [4, 5]]
    cuda = length_sorted_batches(lengths, 32, overhead_tokens=batch_overhead_tokens("cuda"))
    assert [b.tolist() for b in cuda] == [[0, 1, 2, 3, 4, 5]] and batch_overhead_tokens("npu") == MAX_BATCH_TOKENS
