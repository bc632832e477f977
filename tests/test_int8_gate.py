"""The INT8 gate (granite_rt.int8_gate): figures, bounds, the shipped probe set, and end to end on a checkpoint
with outlier hidden channels (as trained encoders have) whose INT8 really degrades: the export marks it not
recommended, ``dtype="auto"`` skips it (info["why"] names the figure) and ``dtype="int8"`` runs it with a warning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from granite_rt import int8_gate
from granite_rt.int8_gate import GateBounds, embedder_figures, judge, parse_bounds, probes, reranker_figures

CALIBRATION = Path(__file__).resolve().parents[1] / "granite_rt" / "calibration"


def test_probe_set_looks_like_retrieval_and_is_not_the_calibration_set():
    p = probes()
    assert len(p.queries) + len(p.passages) >= 200
    assert len(p.queries) >= 100 and len(p.passages) >= 100
    scripts = {"latin": r"[a-zA-Z]", "cyrillic": r"[\u0400-\u04FF]", "arabic": r"[\u0600-\u06FF]",
               "hebrew": r"[\u0590-\u05FF]", "greek": r"[\u0370-\u03FF]", "devanagari": r"[\u0900-\u097F]",
               "thai": r"[\u0E00-\u0E7F]", "han": r"[\u4E00-\u9FFF]", "kana": r"[\u3040-\u30FF]",
               "hangul": r"[\uAC00-\uD7AF]"}
    assert all(any(re.search(rx, t) for t in p.queries) for rx in scripts.values())
    assert sum(len(t.split()) > 1000 for t in p.passages) >= 10  # fill any window up to 512 tokens and more
    assert all(len(c) == int8_gate.CANDIDATES_PER_QUERY == len(set(c)) for c in p.candidates)
    assert len(p.candidates) == len(p.queries)
    calibration = {line for f in CALIBRATION.glob("*.txt") for line in f.read_text(encoding="utf-8").splitlines()}
    assert len(calibration) > 500  # english.txt and multilingual.txt were read
    assert not (set(p.queries) | set(p.passages)) & calibration


def test_reranker_probe_pairs_cut_long_passages_but_keep_them_long(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, folder, **options):
            self.info = {"file": "onnx/model.onnx"}

        def predict(self, pairs, activation):
            seen.extend(pairs)
            return np.zeros(len(pairs))

    monkeypatch.setattr(int8_gate, "Reranker", Recorder)
    from granite_rt.backends.base import Artifact

    logits = int8_gate._outputs(Path("folder"), "reranker", Artifact("onnx/model.onnx", "onnx", "fp32"))
    assert logits.shape == (len(probes().queries), int8_gate.CANDIDATES_PER_QUERY)
    words = [len(passage.split()) for _, passage in seen]
    assert max(words) <= int8_gate.RERANKER_PASSAGE_WORDS
    assert sum(w >= 400 for w in words) >= 50          # the long passages still fill a 512-token window
    assert sum(words) < 0.6 * sum(len(probes().passages[i].split()) for c in probes().candidates for i in c)


def test_judge_names_every_missed_bound():
    figures = {"mean_cosine": 0.995, "p1_cosine": 0.95, "min_cosine": 0.9, "top10_overlap": 0.85}
    result = judge(figures, GateBounds())
    assert not result.recommended
    assert result.missed == ["p1 cosine 0.9500 < 0.97", "top10 overlap 0.8500 < 0.9"]
    assert set(result.bounds) == {"mean_cosine", "p1_cosine", "top10_overlap"}  # τ is for rerankers
    assert judge(figures, GateBounds(p1_cosine=0.9, top10_overlap=0.8)).recommended


def test_ranking_figures_are_judged_only_where_fp32_can_rank():
    ties = {"mean_cosine": 0.9999, "p1_cosine": 0.9999, "top10_overlap": 0.6, "fp32_top10_gap": 7e-8}
    result = judge(ties, GateBounds())
    assert result.recommended and "top10_overlap" not in result.bounds
    assert result.not_applied and "fp32 cannot rank" in result.not_applied[0]
    assert not judge({**ties, "fp32_top10_gap": 0.006}, GateBounds()).recommended
    assert judge({"kendall_tau": 0.2, "fp32_logit_spread": 0.002}, GateBounds()).recommended
    assert not judge({"kendall_tau": 0.2, "fp32_logit_spread": 3.0}, GateBounds()).recommended


def test_bounds_are_configurable_and_checked():
    assert parse_bounds("p1_cosine=0.95, kendall_tau=0.8") == GateBounds(p1_cosine=0.95, kendall_tau=0.8)
    assert parse_bounds(None) == GateBounds()
    for bad, message in [("p1=0.9", "NAME=VALUE"), ("mean_cosine", "NAME=VALUE"), ("mean_cosine=x", "not a number"),
                         ("mean_cosine=1.5", "within")]:
        with pytest.raises(ValueError, match=message):
            parse_bounds(bad)


def test_figures_of_identical_and_of_degraded_outputs():
    rng = np.random.default_rng(0)
    n = len(probes().queries) + len(probes().passages)
    vectors = rng.normal(size=(n, 32))
    same = embedder_figures(vectors, vectors)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    noisy = embedder_figures(vectors, vectors + rng.normal(scale=0.5, size=vectors.shape))
    assert noisy["mean_cosine"] < 0.95 and noisy["top10_overlap"] < 0.9
    logits = rng.normal(size=(len(probes().queries), 8))
    same_logits = reranker_figures(logits, logits)
    assert (same_logits["kendall_tau"], same_logits["min_kendall_tau"], same_logits["max_abs_logit_diff"]) == (1, 1, 0)
    assert reranker_figures(logits, -logits)["kendall_tau"] == -1.0


# Outlier fixture: a tiny ModernBERT embedder with weights of std 0.2 (at 0.02 a tiny random model maps every text
# to nearly one vector, cosine 0.99999 between texts, and no figure could tell INT8 from fp32), then the same
# checkpoint with 3 hidden channels of every pre-norm activation scaled by OUTLIER_FACTOR (fp32 unchanged).
# Random weights place a query's neighbours closer together than trained ones (median gap between the 10th and
# 11th passage 0.0014 here vs 0.0067 for all-MiniLM-L6-v2), so the fixture's top-10 bound is 0.85: measured, the
# plain checkpoint keeps 0.896 (ONNX) / 0.890 (OpenVINO) of its top 10 at cosines 0.998, and MiniLM 0.945 / 0.969.
OUTLIER_FACTOR = 80.0
FORMATS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
FIXTURE_BOUNDS = GateBounds(top10_overlap=0.85)


@pytest.fixture(scope="module")
def gate_exports(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    pytest.importorskip("nncf")
    from conftest import sample_texts
    from granite_export import export_model
    from granite_export.random_models import TINY_EMBEDDER, build_checkpoint, inject_outlier_channels

    root = tmp_path_factory.mktemp("int8-gate")
    plain = build_checkpoint(root / "plain", TINY_EMBEDDER, texts=sample_texts(), max_seq_length=128,
                             initializer_range=0.2)
    outliers = inject_outlier_channels(plain, root / "outliers", OUTLIER_FACTOR)
    return {name: (export_model(ckpt, root / f"{name}-export", formats=FORMATS, calibration_samples=64,
                                log=lambda _: None, gate=FIXTURE_BOUNDS), root / f"{name}-export")[1]
            for name, ckpt in (("plain", plain), ("outliers", outliers))}


def _int8_entries(folder: Path) -> dict[str, dict]:
    manifest = json.loads((folder / "granite_rt.json").read_text())
    return {a["backend"]: a for a in manifest["artifacts"] if a["precision"] == "int8"}


def test_gate_figures_are_in_the_manifest(gate_exports):
    for name, folder in gate_exports.items():
        for backend, entry in _int8_entries(folder).items():
            gate = entry["gate"]
            assert set(gate["figures"]) >= {"mean_cosine", "p1_cosine", "min_cosine", "top10_overlap"}
            assert gate["bounds"] == {"mean_cosine": 0.99, "p1_cosine": 0.97, "top10_overlap": 0.85}
            assert gate["probes"]["queries"] == len(probes().queries)
            assert entry["recommended"] is (not gate["missed"]), (name, backend, gate)


def test_plain_checkpoint_passes_and_outliers_break_the_onnx_recipe(gate_exports):
    """The ONNX recipe (per-tensor static activations, no SmoothQuant) cannot cope with 80x channels; NNCF's
    SmoothQuant moves them into the weights, so OpenVINO INT8 stays as good as on the plain checkpoint."""
    plain, outliers = _int8_entries(gate_exports["plain"]), _int8_entries(gate_exports["outliers"])
    assert plain["onnx"]["recommended"] and plain["openvino"]["recommended"], (plain["onnx"]["gate"],
                                                                               plain["openvino"]["gate"])
    broken = outliers["onnx"]["gate"]
    assert not outliers["onnx"]["recommended"]
    assert broken["figures"]["mean_cosine"] < 0.99 and any(m.startswith("mean cosine") for m in broken["missed"])
    smooth = outliers["openvino"]["gate"]["figures"]["mean_cosine"]
    assert smooth >= plain["openvino"]["gate"]["figures"]["mean_cosine"] - 0.005
    # the IR with split down-projections missed the gate there, so the export wrote it again with them fp32
    recipe = outliers["openvino"]["quantization"]
    assert recipe["down_projections"] == "fp32" and recipe["smooth_quant"] == "NNCF, every MatMul"
    assert any(m.startswith(("p1 cosine", "mean cosine", "top10")) for m in recipe["split_down_projections_missed"])


def test_auto_skips_the_failing_int8_and_says_why(gate_exports, vnni_cpu):
    from granite_rt import Embedder

    folder = gate_exports["outliers"]
    onnx_auto = Embedder(folder, backend="onnx")
    assert onnx_auto.info["dtype"] == "fp32" and onnx_auto.info["file"] == "onnx/model.onnx"
    assert "onnx/model_qint8.onnx skipped: failed the INT8 gate (mean cosine" in onnx_auto.info["why"]
    with pytest.warns(UserWarning, match="NOT recommended: failed the INT8 gate"):
        forced = Embedder(folder, backend="onnx", dtype="int8")
    assert forced.info["file"] == "onnx/model_qint8.onnx" and "NOT recommended" in forced.info["why"]
    plain = Embedder(gate_exports["plain"], backend="onnx")
    assert plain.info["dtype"] == "int8"


def test_export_cli_reports_a_not_recommended_artifact(gate_exports, tmp_path):
    from conftest import run_export_cli

    checkpoint = gate_exports["outliers"].parent / "outliers"
    result = run_export_cli(str(checkpoint), "--out", str(tmp_path / "cli"), "--formats", "onnx,onnx-int8",
                            "--calibration-samples", "16", "--int8-gate", "top10_overlap=0.85")
    assert result.returncode == 0, result.stderr
    assert "NOT RECOMMENDED: mean cosine" in result.stdout
    assert re.search(r"WARNING: onnx/model_qint8.onnx: mean cosine .* NOT recommended", result.stderr), result.stderr
    bad = run_export_cli(str(checkpoint), "--out", str(tmp_path / "bad"), "--int8-gate", "p1=0.5")
    assert bad.returncode == 2 and "--int8-gate" in bad.stderr
