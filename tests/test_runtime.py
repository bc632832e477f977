"""Embedder/Reranker behaviour: call shapes, bad input, truncation, padding invariance, thread safety."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from granite_rt import Embedder, Reranker
from granite_rt.batching import MAX_BATCH_TOKENS

TEXTS = ["What is the chemical formula of water?", "Water is H2O.", "", "   ", "😀", "mixed 日本語 Русский",
         "nul\x00byte", "a much longer text about boundary layers, supersonic flow and heat transfer " * 3]


@pytest.fixture(scope="module", params=["onnx", "openvino"])
def embedder(request, tiny_embedder_folders) -> Embedder:
    return Embedder(tiny_embedder_folders["hub"], backend=request.param, dtype="fp32")


@pytest.fixture(scope="module")
def reranker(tiny_reranker_folders) -> Reranker:
    return Reranker(tiny_reranker_folders["export"], backend="onnx", dtype="fp32")


def test_shapes_single_string_and_empty(embedder):
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    one = embedder.encode(TEXTS[0])
    assert one.shape == (embedder.dim,)
    np.testing.assert_allclose(one, vectors[0], atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)
    assert embedder.encode([], truncate_dim=16).shape == (0, 16)
    assert embedder.encode(iter(TEXTS[:2])).shape == (2, embedder.dim)


def test_batch_overhead_tokens_is_checked(embedder):
    for bad in (-1, 2.5, True, "16"):
        with pytest.raises(ValueError, match="batch_overhead_tokens"):
            embedder.batch_overhead_tokens = bad


def test_padding_invariance_and_input_order(embedder):
    """A text's vector does not depend on its batch neighbours or on the batch size."""
    alone = np.stack([embedder.encode([t])[0] for t in TEXTS])
    cut = embedder.batch_overhead_tokens
    try:
        for overhead in (cut, MAX_BATCH_TOKENS):  # batches cut by length; the fewest, fullest (most padding)
            embedder.batch_overhead_tokens = overhead
            for batch_size in (1, 3, 32):
                np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=batch_size), alone, atol=1e-5)
    finally:
        embedder.batch_overhead_tokens = cut
    shuffled = [TEXTS[i] for i in (7, 2, 5, 0, 1, 6, 3, 4)]
    np.testing.assert_allclose(embedder.encode(shuffled, batch_size=3), alone[[7, 2, 5, 0, 1, 6, 3, 4]], atol=1e-5)


def test_normalize_and_truncate_dim(embedder):
    raw = embedder.encode(TEXTS, normalize=False)
    unit = embedder.encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # raw pooled vectors, Normalize skipped
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    cut = embedder.encode(TEXTS, truncate_dim=16)
    assert cut.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(cut, raw[:, :16] / np.linalg.norm(raw[:, :16], axis=1, keepdims=True), atol=1e-6)
    for bad in (0, embedder.dim + 1, 2.5, True):
        with pytest.raises(ValueError, match="truncate_dim"):
            embedder.encode(TEXTS, truncate_dim=bad)


def test_long_text_is_truncated_at_max_length(embedder):
    long = "boundary layer " * 500
    assert len(embedder.tokenizer.untruncated().encode(long).ids) > embedder.max_length
    assert len(embedder.tokenizer.encode([long])[0].ids) == embedder.max_length
    # Truncation keeps the start: appending more text past the limit changes nothing.
    np.testing.assert_allclose(embedder.encode(long), embedder.encode(long + " extra words " * 50), atol=1e-6)


@pytest.mark.parametrize("texts, error, match", [
    (None, TypeError, "texts must be a str or a list of str"),
    (42, TypeError, "texts must be a str or a list of str"),
    (b"bytes", TypeError, "texts must be"),
    (["ok", None], TypeError, r"texts\[1\] is NoneType"),
    (["ok", "fine", 3], TypeError, r"texts\[2\] is int"),
    (["ok", "lone \ud800 surrogate"], ValueError, r"texts\[1\] is not valid Unicode"),
])
def test_bad_texts_name_the_problem(embedder, texts, error, match):
    with pytest.raises(error, match=match):
        embedder.encode(texts)


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_bad_batch_size(embedder, bad):
    with pytest.raises(ValueError, match="batch_size"):
        embedder.encode(TEXTS, batch_size=bad)


def test_predict_shapes_and_activation(reranker):
    pairs = [(TEXTS[0], t) for t in TEXTS]
    logits = reranker.predict(pairs, activation="identity")
    assert logits.shape == (len(pairs),) and logits.dtype == np.float32
    np.testing.assert_allclose(reranker.predict(pairs), 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)
    np.testing.assert_allclose(reranker.predict(pairs, activation="sigmoid"), reranker.predict(pairs), atol=0)
    assert reranker.predict([]).shape == (0,)
    single = reranker.predict(pairs[1])
    assert np.ndim(single) == 0 and abs(float(single) - float(reranker.predict(pairs)[1])) < 1e-6
    np.testing.assert_allclose(reranker.predict(pairs, batch_size=1), reranker.predict(pairs, batch_size=8), atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        reranker.predict(pairs, activation="softmax")


def test_rank_sorts_and_keeps_indices(reranker):
    docs = TEXTS[1:]
    scores = reranker.predict([(TEXTS[0], d) for d in docs])
    ranking = reranker.rank(TEXTS[0], docs, return_documents=True)
    assert [r["corpus_id"] for r in ranking] == sorted(range(len(docs)), key=lambda i: -scores[i])
    assert all(r["text"] == docs[r["corpus_id"]] for r in ranking)
    top = reranker.rank(TEXTS[0], docs, top_k=2)
    assert top == [{"corpus_id": r["corpus_id"], "score": r["score"]} for r in ranking[:2]]
    assert reranker.rank(TEXTS[0], []) == []


@pytest.mark.parametrize("pairs, error, match", [
    ([("q", "d"), ("only one",)], TypeError, r"pairs\[1\] must be a \(query, document\) pair"),
    ([("q", "d"), ("a", "b", "c")], TypeError, r"pairs\[1\] must be .* of length 3"),
    ([("q", "d"), "qd"], TypeError, r"pairs\[1\] must be"),
    ([("q", None)], TypeError, r"pairs\[0\]\[1\] is NoneType"),
    ([("q", "lone \udc00")], ValueError, r"pairs\[0\] is not valid Unicode"),
    (None, TypeError, "pairs must be"),
    ("one string", TypeError, r"pairs must be a list of \(query, document\) pairs or one pair, got a str"),
])
def test_bad_pairs_name_the_problem(reranker, pairs, error, match):
    with pytest.raises(error, match=match):
        reranker.predict(pairs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"query": None, "documents": ["d"]}, TypeError, "query must be a str"),
    ({"query": "q", "documents": ["d", 5]}, TypeError, r"documents\[1\] is int"),
    ({"query": "q", "documents": None}, TypeError, "documents must be"),
    # issue 18: a str was iterated, ranking each character as a document
    ({"query": "q", "documents": "one document"}, TypeError, r"documents must be a list of str, got a str"),
    ({"query": "q", "documents": ["d"], "top_k": 0}, ValueError, "top_k"),
    ({"query": "q", "documents": ["d"], "top_k": -3}, ValueError, "top_k"),
    ({"query": "q", "documents": ["d"], "top_k": 1.5}, ValueError, "top_k"),
])
def test_bad_rank_arguments(reranker, kwargs, error, match):
    with pytest.raises(error, match=match):
        reranker.rank(**kwargs)


def test_concurrent_calls_give_the_sequential_results(embedder, reranker):
    """One model object shared by 8 threads: same vectors and scores as one thread, no crash."""
    texts = [f"{t} #{i}" for i in range(6) for t in TEXTS]
    expected = embedder.encode(texts, batch_size=4)
    pairs = [(TEXTS[0], t) for t in texts]
    expected_scores = reranker.predict(pairs, batch_size=4)
    start = threading.Barrier(8)

    def work(k: int):
        start.wait()
        if k % 2:
            return "emb", embedder.encode(texts, batch_size=4)
        return "rr", reranker.predict(pairs, batch_size=4)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for kind, value in results:
        np.testing.assert_allclose(value, expected if kind == "emb" else expected_scores, atol=1e-5)


def test_wrong_kind_is_refused(tiny_embedder_folders, tiny_reranker_folders):
    from granite_rt.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="is a reranker; load it with granite_rt.Reranker"):
        Embedder(tiny_reranker_folders["export"], backend="onnx")
    with pytest.raises(UnsupportedModelError, match="is an embedder; load it with granite_rt.Embedder"):
        Reranker(tiny_embedder_folders["export"], backend="onnx")
