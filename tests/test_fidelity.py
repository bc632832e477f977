"""Fidelity bounds on real weights: all-MiniLM-L6-v2 exported in every format, on Cranfield.

Subsampling for CI time: 30 of the 225 queries drawn at random (seed 0) and a 200-document corpus
made of every document judged relevant to them plus random others (granite_rt.eval.collections.
subsample); each artifact embeds those ~230 texts once, sentence-transformers (torch) once more.
Bounds (issue 6): fp32 cosine to sentence-transformers ≥ 0.99999 for every text and nDCG@10 within
0.001 of it; INT8 and bf16 mean cosine ≥ 0.99, 1st percentile ≥ 0.97, nDCG@10 within 1 point of
fp32. The full-collection table is in docs/fidelity.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA
from granite_rt.backends.openvino import amx_int8_bf16_wrong   # on AMX int8+bf16 gave wrong vectors on these texts

CRANFIELD = SHARED_DATA / "cranfield"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CRANFIELD.is_dir(), reason="shared Cranfield data not present")]

FP32 = ("onnx/fp32", "openvino/fp32")
INT8 = ("onnx/int8", "openvino/int8")
BF16 = ("openvino/bf16", "openvino/int8+bf16")   # CPUs with BF16 only; int8+bf16 is auto's choice there


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def report(exported_minilm):
    pytest.importorskip("sentence_transformers")
    from granite_rt.eval.runner import Subsample, evaluate

    return evaluate(exported_minilm, CRANFIELD, reference=True, subsample=Subsample(queries=30, docs=200, seed=0))


def test_report_covers_every_artifact(report):
    assert report.compared_to == "sentence-transformers/fp32"
    assert report.n_queries == 30 and report.n_docs == 200
    expected = ["sentence-transformers/fp32", *FP32, *INT8] + (list(BF16) if cpu_has_bf16() else [])
    if amx_int8_bf16_wrong():
        expected.remove("openvino/int8+bf16")
        assert "wrong vectors on CPUs with AMX-BF16" in report.row("openvino/int8+bf16").skipped
    ran = [r.name for r in report.rows if r.skipped is None]
    assert sorted(ran) == sorted(expected), report.to_markdown()


@pytest.mark.parametrize("name", FP32)
def test_fp32_equals_sentence_transformers(report, name):
    ref, row = report.row("sentence-transformers/fp32"), report.row(name)
    assert row.cosine_min >= 0.99999, report.to_markdown()
    assert abs(row.ndcg_at_10 - ref.ndcg_at_10) <= 0.001, report.to_markdown()
    assert abs(row.recall_at_100 - ref.recall_at_100) <= 0.001, report.to_markdown()


@pytest.mark.parametrize("name", INT8 + BF16)
def test_reduced_precision_within_bounds(report, name):
    if name in BF16 and not cpu_has_bf16():
        pytest.skip("this CPU reports no BF16 in OpenVINO's OPTIMIZATION_CAPABILITIES")
    if name == "openvino/int8+bf16" and amx_int8_bf16_wrong():
        pytest.skip("int8+bf16 is refused on AMX (test_report_covers_every_artifact checks that it was)")
    row = report.row(name)
    fp32 = report.row(f"{row.backend}/fp32")
    assert row.skipped is None, row.skipped
    assert row.cosine_mean >= 0.99, report.to_markdown()
    assert row.cosine_p1 >= 0.97, report.to_markdown()
    assert abs(row.ndcg_at_10 - fp32.ndcg_at_10) <= 0.01, report.to_markdown()


@pytest.mark.parametrize("dtype, hint", [("fp32", "f32"), ("bf16", "bf16")])
def test_openvino_compute_precision_is_what_was_asked(exported_minilm, dtype, hint):
    """On a BF16 CPU OpenVINO's default is bf16: dtype="fp32" must set the f32 hint explicitly."""
    if dtype == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU reports no BF16 in OpenVINO's OPTIMIZATION_CAPABILITIES")
    from granite_rt import Embedder

    embedder = Embedder(exported_minilm, backend="openvino", device="cpu", dtype=dtype)
    compiled = embedder._model.backend.compiled
    assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == hint
    assert embedder.info["dtype"] == dtype and embedder.info["file"] == "openvino/openvino_model.xml"


SHORT = ["what is the chemical formula of water?", "lift of a wing", "shock waves at hypersonic speed ."]


@pytest.mark.parametrize("backend, dtype", [("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8"), ("openvino", "int8")])
def test_padding_invariance(exported_minilm, backend, dtype):
    """A short text's vector alone equals its vector in one batch with texts of ~250 tokens (padded to them).

    INT8 is held to the fp32 bound too: the export quantises statically, so activation scales do
    not depend on the batch (onnxruntime's dynamic INT8 computes them over the padded batch and fails this).
    """
    from granite_rt import Embedder
    from granite_rt.batching import MAX_BATCH_TOKENS
    from granite_rt.eval.collections import load_cranfield

    long_texts = sorted(load_cranfield(CRANFIELD).docs, key=len)[-3:]
    embedder = Embedder(exported_minilm, backend=backend, device="cpu", dtype=dtype)
    embedder.batch_overhead_tokens = MAX_BATCH_TOKENS  # one batch: the short texts padded to the long ones
    alone = np.stack([embedder.encode([t])[0] for t in SHORT])
    with pytest.warns(UserWarning, match="truncated"):
        batched = embedder.encode(SHORT + long_texts, batch_size=len(SHORT) + len(long_texts))[: len(SHORT)]
    cosines = (alone * batched).sum(axis=1)
    assert cosines.min() >= 0.99999, f"{backend}/{dtype}: cosine alone vs padded {cosines}"
