"""evaluate() and `granite-rt eval` wiring on the tiny random checkpoints and a small BEIR folder:
rows per artifact, skips with reasons, metrics equal to a direct computation, reranker τ, reference
mode, JSON/markdown, CLI exit codes, and no torch import from the module."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from granite_rt.cli import main as cli_main
from granite_rt.eval.collections import load_collection
from granite_rt.eval import runner
from granite_rt.eval.runner import EvalReport, EvalRow, Subsample, evaluate
from test_eval_metrics import _loop_ndcg

WORDS = "wing lift shock flow heat plate boundary layer pressure supersonic turbulent nozzle".split()


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    """12 documents, 4 judged queries, graded qrels, in BEIR layout."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("beir") / "toy"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": WORDS[i], "text": " ".join(rng.choice(WORDS, 3 + i * 4))} for i in range(12)]
    queries = [{"_id": f"q{i}", "text": f"{WORDS[i]} {WORDS[i + 4]}"} for i in range(4)]
    (folder / "corpus.jsonl").write_text("\n".join(map(json.dumps, docs)) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(map(json.dumps, queries)) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{j}\t{(i + j) % 3}" for i in range(4) for j in range(i, i + 4)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_embedder_rows_skips_and_metrics(tiny_embedder_folders, beir_folder):
    folder = tiny_embedder_folders["hub"]            # onnx fp32 + openvino fp32, no INT8
    report = evaluate(folder, beir_folder, artifacts=["onnx/fp32", "openvino/fp32", "onnx/int8"])
    assert report.kind == "embedder" and report.compared_to == "onnx/fp32"
    assert (report.n_queries, report.n_docs) == (4, 12)
    onnx, ov, int8 = (report.row(n) for n in ("onnx/fp32", "openvino/fp32", "onnx/int8"))
    assert onnx.artifact == "onnx/model.onnx" and ov.artifact == "openvino/openvino_model.xml"
    assert int8.skipped and "int8" in int8.skipped.lower()
    assert ov.cosine_min >= 0.99999 and ov.jaccard_at_10 == 1.0 and ov.docs_per_s > 0
    assert onnx.cosine_mean is None                   # the baseline is not compared with itself
    # the same numbers straight from the runtime's vectors
    from granite_rt import Embedder

    coll = load_collection(beir_folder)
    emb = Embedder(folder, backend="onnx", dtype="fp32")
    scores = emb.encode(coll.queries) @ emb.encode(coll.docs).T
    qrels = {i: {coll.doc_ids.index(d): g for d, g in coll.qrels[q].items()} for i, q in enumerate(coll.query_ids)}
    assert onnx.ndcg_at_10 == pytest.approx(np.mean(_loop_ndcg(scores, qrels, 10)), abs=1e-6)
    data = json.loads(report.to_json())
    assert [r["backend"] + "/" + r["precision"] for r in data["rows"]] == ["onnx/fp32", "openvino/fp32", "onnx/int8"]
    assert data["rows"][0]["ndcg_at_10"] == onnx.ndcg_at_10 and data["machine"]["cores"] >= 1
    table = report.to_markdown()
    assert "| onnx/model.onnx | onnx | fp32 |" in table and "onnx/int8 skipped:" in table


def test_subsample_and_unknown_variant(tiny_embedder_folders, beir_folder):
    report = evaluate(tiny_embedder_folders["hub"], beir_folder, artifacts="onnx/fp32",
                      subsample=Subsample(queries=2, docs=9, seed=3))
    assert (report.n_queries, report.n_docs) == (2, 9) and any("subsample" in n for n in report.notes)
    with pytest.raises(ValueError, match="unknown artifact variant"):
        evaluate(tiny_embedder_folders["hub"], beir_folder, artifacts="onnx/int4")


def test_reranker_reranks_retriever_top20(tiny_reranker_folders, tiny_embedder_folders, tiny_reranker_checkpoint,
                                          beir_folder):
    pytest.importorskip("sentence_transformers")
    report = evaluate(tiny_reranker_folders["hub"], beir_folder, artifacts="onnx/fp32,openvino/fp32",
                      retriever=tiny_embedder_folders["hub"], reference=True, reference_model=tiny_reranker_checkpoint)
    assert report.kind == "reranker" and report.compared_to == "sentence-transformers/fp32"
    for name in ("onnx/fp32", "openvino/fp32"):
        row = report.row(name)
        assert row.kendall_tau_min >= 0.99 and row.score_max_abs_diff <= 1e-3, report.to_markdown()
        assert row.cosine_mean is None and 0 <= row.ndcg_at_10 <= 1
    assert any(n.startswith("candidates: top-12") for n in report.notes)   # 12 documents < depth 20
    assert "τ mean" in report.to_markdown()
    with pytest.raises(ValueError, match="retriever"):
        evaluate(tiny_reranker_folders["hub"], beir_folder, artifacts="onnx/fp32")


def test_report_round_trips_through_json():
    report = EvalReport("m", "embedder", "c", 1, 2, "onnx/fp32",
                        rows=[EvalRow("onnx", "fp32", ndcg_at_10=float("nan")), EvalRow("onnx", "int8", skipped="x")])
    data = json.loads(report.to_json())
    assert data["rows"][0]["ndcg_at_10"] is None and data["rows"][1]["skipped"] == "x"
    with pytest.raises(KeyError, match="openvino/fp32"):
        report.row("openvino/fp32")


def test_cli_writes_table_and_json(tiny_embedder_folders, beir_folder, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = cli_main(["eval", str(tiny_embedder_folders["hub"]), "--collection", str(beir_folder), "--artifacts", "onnx/fp32",
               "--json", str(out), "--queries", "3", "-q"])
    assert rc == 0
    assert "| onnx/model.onnx | onnx | fp32 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["n_queries"] == 3


def test_cli_usage_errors(tiny_embedder_folders, beir_folder, tmp_path, capsys):
    assert cli_main(["eval", str(tiny_embedder_folders["hub"])]) == 2
    assert "--collection" in capsys.readouterr().err
    assert cli_main(["eval", str(tiny_embedder_folders["hub"]), "--collection", str(tmp_path)]) == 2
    assert "neither a Cranfield folder" in capsys.readouterr().err
    assert cli_main(["eval", str(tiny_embedder_folders["hub"]), "--collection", str(beir_folder),
                     "--artifacts", "tf/fp8"]) == 2
    assert "unknown artifact variant" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "no-model"), "--collection", str(beir_folder), "-q"]) == 1
    assert "no-model" in capsys.readouterr().err


def test_module_imports_no_torch():
    code = ("import sys, granite_rt.eval.runner, granite_rt.eval.reference; "
            "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'onnxruntime', 'openvino') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_old_module_path_still_works_with_a_deprecation_warning():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import granite_rt.evaluate\nexcept DeprecationWarning as w:\n    print(w)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "moved to granite_rt.eval.runner" in result.stdout, result.stderr
    from granite_rt.evaluate import evaluate as old  # noqa: PLC0415 - the deprecated path, on purpose

    assert old is evaluate


def test_the_report_header_prints_the_load_rounded(monkeypatch):
    monkeypatch.setattr(runner.os, "getloadavg", lambda: (3.73046875, 2.0, 1.0))
    machine = runner.machine_info()
    assert machine["load_average_1min"] == 3.73
    report = EvalReport(model="m", kind="embedder", collection="c", n_queries=1, n_docs=1, compared_to=None,
                        machine=machine)
    assert "1-min load 3.73," in report.to_markdown()
