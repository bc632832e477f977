"""Output formats: every precision and Matryoshka truncation against sentence-transformers' own functions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from granite_rt.output import PRECISIONS, calibration_ranges, check_precision, output_dim, quantize, truncate

st_quant = pytest.importorskip("sentence_transformers.util.quantization")


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """Unit float32 vectors with an odd dim (37: binary packing pads the last byte)."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal((150, 37)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_quantize_matches_sentence_transformers(vectors, precision):
    ours = quantize(vectors, precision)
    theirs = st_quant.quantize_embeddings(vectors, precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_quantize_with_calibration_ranges_matches_sentence_transformers(vectors, precision):
    ranges = calibration_ranges(vectors[:100])
    ours = quantize(vectors[100:], precision, ranges=ranges)
    theirs = st_quant.quantize_embeddings(vectors[100:], precision=precision, ranges=ranges)
    np.testing.assert_array_equal(ours, theirs)
    # Calibrated on other vectors, a single vector quantizes too.
    np.testing.assert_array_equal(quantize(vectors[120:121], precision, ranges=ranges), theirs[20:21])


def test_binary_packs_eight_dims_per_byte_by_hand():
    v = np.array([[1, -1, 1, 1, -1, -1, -1, 1, 0.5, -2]], dtype=np.float32)
    assert quantize(v, "ubinary").tolist() == [[0b10110001, 0b10000000]]
    assert quantize(v, "binary").tolist() == [[0b10110001 - 128, 0b10000000 - 128]]


def test_float16(vectors):
    out = quantize(vectors, "float16")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, vectors.astype(np.float16))


def test_int8_of_one_vector_needs_ranges(vectors):
    with pytest.raises(ValueError, match="ranges"):
        quantize(vectors[:1], "int8")


def test_bad_ranges_and_precision(vectors):
    with pytest.raises(ValueError, match="ranges"):
        quantize(vectors, "uint8", ranges=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="precision.*dtype"):
        check_precision("fp16")
    with pytest.raises(TypeError, match="float"):
        quantize(quantize(vectors, "uint8"), "binary")
    assert set(PRECISIONS) == {"float32", "float16", "int8", "uint8", "binary", "ubinary"}


@pytest.mark.parametrize("dim", [1, 16, 36, 37])
def test_truncate_matches_sentence_transformers(vectors, dim):
    import torch
    from sentence_transformers.util.tensor import truncate_embeddings

    raw = vectors * 3.0
    expected = torch.nn.functional.normalize(torch.from_numpy(truncate_embeddings(raw, dim)), p=2, dim=1).numpy()
    np.testing.assert_allclose(truncate(raw, dim, normalize=True), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(truncate(raw, dim, normalize=False), truncate_embeddings(raw, dim))


def test_output_dim_accepts_declared_dims_silently_and_warns_otherwise():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert output_dim(None, 768, (768, 512, 384, 256, 128)) == 768
        assert output_dim(256, 768, (768, 512, 384, 256, 128)) == 256
        assert output_dim(768, 768, ()) == 768
    with pytest.warns(UserWarning, match="no Matryoshka"):
        assert output_dim(100, 384, ()) == 100
    with pytest.warns(UserWarning, match="declares Matryoshka dims"):
        assert output_dim(300, 768, (768, 512)) == 300


@pytest.mark.parametrize("bad", [0, -1, 385, 2.0, True, "128"])
def test_output_dim_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="truncate_dim"):
        output_dim(bad, 384, ())
