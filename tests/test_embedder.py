"""Long-text modes, truncate_dim and output precisions through Embedder.encode on the tiny exported model."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import sample_texts

from granite_rt.batching import MAX_BATCH_TOKENS

LONG = " ".join(sample_texts(limit_per_language=3)[:12])
SHORT = "What is the chemical formula of water?"


@pytest.fixture(scope="module")
def emb(tiny_embedder_folders):
    from granite_rt import Embedder

    return Embedder(tiny_embedder_folders["export"], backend="onnx", dtype="fp32")


def _hand_windows(emb, text, window_tokens, stride):
    """Windows built by hand from the untruncated encoding: [CLS] + tokens[s:s+size] + [SEP]."""
    full = emb.tokenizer.encode_full([text])[0]
    ids, offsets = full.ids[1:-1], full.offsets[1:-1]
    size, out, start = window_tokens - 2, [], 0
    while True:
        stop = min(start + size, len(ids))
        out.append((SimpleNamespace(ids=[full.ids[0], *ids[start:stop], full.ids[-1]], type_ids=[0] * (stop - start + 2)),
                    (offsets[start][0], offsets[stop - 1][1])))
        if stop == len(ids):
            return out
        start += size - stride


def test_window_pooling_equals_hand_computation(emb):
    hand = _hand_windows(emb, LONG, window_tokens=24, stride=5)
    assert len(hand) >= 4
    raw = emb._model.run([w for w, _ in hand], 32, lambda h, b: h[:, 0])          # CLS pooling, by hand
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    expected = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
    got = emb.encode([LONG, SHORT], long_text="window", window_tokens=24, window_stride=5)
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=2e-6)
    per_window = emb.encode(LONG, long_text="windows", window_tokens=24, window_stride=5)
    np.testing.assert_allclose(per_window.vectors, unit, rtol=0, atol=2e-6)
    assert per_window.spans == [span for _, span in hand]
    assert per_window.spans[0][0] == 0 and per_window.spans[-1][1] == len(LONG.rstrip())


def test_text_shorter_than_a_window_gives_the_truncate_vector(emb):
    alone = emb.encode([SHORT])
    np.testing.assert_array_equal(emb.encode([SHORT], long_text="window", window_tokens=64), alone)
    cut = emb.batch_overhead_tokens
    emb.batch_overhead_tokens = MAX_BATCH_TOKENS  # SHORT shares a padded batch with LONG's windows
    try:
        mixed = emb.encode([LONG, SHORT], long_text="window", window_tokens=64, window_stride=8)
    finally:
        emb.batch_overhead_tokens = cut
    np.testing.assert_allclose(mixed[1], alone[0], rtol=0, atol=1e-6)   # other batch neighbours: padding-invariant
    one = emb.encode([SHORT], long_text="windows")[0]
    assert len(one.spans) == 1 and one.spans[0] == (0, len(SHORT))
    np.testing.assert_array_equal(one.vectors, alone)


def test_100k_token_text_in_window_mode(emb):
    text = " ".join([LONG] * (100_000 // (len(emb.tokenizer.encode_full([LONG])[0].ids) - 3) + 2))
    n_text_tokens = len(emb.tokenizer.encode_full([text])[0].ids) - 2
    size = emb.max_length - 2
    per = emb.encode(text, long_text="windows", window_tokens=emb.max_length, window_stride=0, batch_size=64)
    assert n_text_tokens > 100_000 and len(per.spans) == -(-n_text_tokens // size)   # every token in one window
    assert per.spans[0][0] == 0 and per.spans[-1][1] == len(text.rstrip())
    vec = emb.encode(text, long_text="window", window_tokens=emb.max_length, window_stride=0, batch_size=64)
    mean = per.vectors.mean(axis=0)
    np.testing.assert_allclose(vec, mean / np.linalg.norm(mean), rtol=0, atol=1e-6)
    # truncate mode embeds only the first max_length tokens and says so
    assert emb.encode([text, SHORT], return_truncation=True)[1].tolist() == [True, False]


def test_truncation_warns_once_per_call(emb):
    with pytest.warns(UserWarning, match=r"1 of 2 texts exceed max_length=128") as record:
        emb.encode([LONG, SHORT])
    assert sum("max_length" in str(r.message) for r in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.encode([SHORT, SHORT])
        emb.encode([LONG], return_truncation=True)
        emb.encode([LONG], long_text="window")
    assert emb.encode(SHORT, return_truncation=True)[1] == np.False_


def test_truncate_dim_matches_sentence_transformers(emb):
    import torch
    from sentence_transformers.util.tensor import truncate_embeddings

    raw = emb.encode([SHORT, LONG], normalize=False, return_truncation=True)[0]
    expected = torch.nn.functional.normalize(torch.from_numpy(truncate_embeddings(raw, 16)), dim=1).numpy()
    with pytest.warns(UserWarning, match="no Matryoshka"):
        got = emb.encode([SHORT, LONG], truncate_dim=16, return_truncation=True)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-6


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "uint8", "binary", "ubinary"])
def test_every_precision_matches_quantize_embeddings(emb, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    texts = sample_texts(limit_per_language=1)[:12]
    floats = emb.encode(texts)
    expected = floats.astype(np.float16) if precision == "float16" else quantize_embeddings(floats, precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few embeddings to calibrate int8 on: warned, as sentence-transformers does
        got = emb.encode(texts, precision=precision)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    if precision in ("int8", "uint8"):
        ranges = np.vstack([floats.min(0), floats.max(0)])
        np.testing.assert_array_equal(emb.encode(texts[0], precision=precision, ranges=ranges),
                                      quantize_embeddings(floats[:1], precision, ranges=ranges)[0])


@pytest.mark.parametrize("kwargs, name", [
    ({"truncate_dim": 0}, "truncate_dim"), ({"truncate_dim": 65}, "truncate_dim"),
    ({"precision": "fp16"}, "precision"), ({"precision": "int4"}, "precision"),
    ({"long_text": "chunks"}, "long_text"),
    ({"long_text": "window", "window_tokens": 32, "window_stride": 32}, "window_stride"),
    ({"long_text": "window", "window_tokens": 2}, "window_tokens"),
    ({"long_text": "windows", "window_tokens": 129}, "window_tokens"),
    ({"precision": "int8", "ranges": np.zeros((2, 3))}, "ranges"),
])
def test_bad_values_raise_value_error_naming_the_argument(emb, kwargs, name):
    with pytest.raises(ValueError, match=name):
        emb.encode([SHORT, LONG], **kwargs)
