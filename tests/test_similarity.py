"""Search helpers: cosine/dot, Hamming on packed binary, and rescoring, against plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from granite_rt.output import quantize
from granite_rt.similarity import cosine_similarity, dot_score, hamming_distance, hamming_search, rescore


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((5, 20)).astype(np.float32), rng.standard_normal((40, 20)).astype(np.float32)


def test_cosine_and_dot_by_hand(data):
    q, c = data
    expected_dot = np.array([[sum(float(x) * float(y) for x, y in zip(a, b)) for b in c] for a in q])
    np.testing.assert_allclose(dot_score(q, c), expected_dot, rtol=1e-5, atol=1e-5)
    norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(c, axis=1)[None, :]
    np.testing.assert_allclose(cosine_similarity(q, c), expected_dot / norms, rtol=1e-5, atol=1e-6)
    assert cosine_similarity(q[0], c).shape == (1, 40)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_hamming_counts_differing_signs(data, precision):
    q, c = data
    dist = hamming_distance(quantize(q, precision), quantize(c, precision))
    expected = ((q[:, None, :] > 0) != (c[None, :, :] > 0)).sum(axis=-1)
    np.testing.assert_array_equal(dist, expected)


def test_hamming_search_and_rescore(data):
    q, c = data
    idx, dist = hamming_search(quantize(q, "ubinary"), quantize(c, "ubinary"), top_k=10)
    assert idx.shape == dist.shape == (5, 10)
    assert np.all(np.diff(dist, axis=1) >= 0)
    full = hamming_distance(quantize(q, "ubinary"), quantize(c, "ubinary"))
    np.testing.assert_array_equal(np.take_along_axis(full, idx, 1), dist)
    best, scores = rescore(q, idx, c, top_k=3)
    cos = cosine_similarity(q, c)
    for row in range(5):
        expected = sorted(idx[row], key=lambda j: -cos[row, j])[:3]
        assert best[row].tolist() == expected
        np.testing.assert_allclose(scores[row], cos[row, expected], rtol=1e-5)
    # Rescoring every candidate with float vectors finds the exact top-3.
    all_idx = np.tile(np.arange(40), (5, 1))
    np.testing.assert_array_equal(rescore(q, all_idx, c, top_k=3, similarity="dot")[0],
                                  np.argsort(-dot_score(q, c), axis=1, kind="stable")[:, :3])


def test_bad_inputs(data):
    q, c = data
    with pytest.raises(TypeError, match="packed binary"):
        hamming_distance(q, c)
    with pytest.raises(TypeError, match="float"):
        dot_score(quantize(q, "ubinary"), c)
    with pytest.raises(ValueError, match="lengths differ"):
        cosine_similarity(q, c[:, :10])
    with pytest.raises(ValueError, match="top_k"):
        hamming_search(quantize(q, "ubinary"), quantize(c, "ubinary"), top_k=0)
    with pytest.raises(ValueError, match="candidates"):
        rescore(q, np.full((5, 2), 40), c)
    with pytest.raises(ValueError, match="similarity"):
        rescore(q, np.zeros((5, 2), dtype=int), c, similarity="l2")
