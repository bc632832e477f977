"""``granite-rt quantize`` in a process where torch and transformers cannot be imported: IBM's Hub layout of
all-MiniLM-L6-v2 (fp32 ONNX + OpenVINO IR, no manifest) gets static INT8 files that pass the INT8 gate and are as
good as the export's own INT8 (same recipe: mean cosine to fp32 within 0.002)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import EXPORT_TEST_ARGS
from torch_blocked import run_without_torch

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def quantized_hub_folder(minilm_folders, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize") / "minilm-hub"
    shutil.copytree(minilm_folders["hub"], folder)
    proc = run_without_torch(f"""
import sys
from granite_rt.cli import main
sys.exit(main(["quantize", {str(folder)!r}, "--calibration-samples", "{EXPORT_TEST_ARGS[1]}"]))
""", timeout=900)
    return folder, proc


def _int8(manifest: dict) -> dict[str, dict]:
    return {a["backend"]: a for a in manifest["artifacts"] if a["precision"] == "int8"}


def test_quantize_writes_gated_static_int8_without_torch(quantized_hub_folder):
    folder, proc = quantized_hub_folder
    assert (folder / "onnx/model_qint8.onnx").is_file() and (folder / "openvino/openvino_model_qint8_quantized.xml").is_file()
    manifest = json.loads((folder / "granite_rt.json").read_text())
    assert {(a["backend"], a["precision"]) for a in manifest["artifacts"]} >= {("onnx", "fp32"), ("openvino", "fp32"),
                                                                              ("onnx", "int8"), ("openvino", "int8")}
    for backend, entry in _int8(manifest).items():
        assert entry["recommended"] is True, entry["gate"]
        assert entry["quantization"]["method"] in ("onnxruntime.quantization.quantize_static", "nncf.quantize")
        assert entry["quantization"]["calibration"] == "granite_rt/calibration/english.txt"
    assert "INT8 gate" in proc.stderr


def test_quantize_equals_the_export_int8_in_quality(quantized_hub_folder, exported_minilm):
    folder, _ = quantized_hub_folder
    exported = _int8(json.loads((exported_minilm / "granite_rt.json").read_text()))
    quantized = _int8(json.loads((folder / "granite_rt.json").read_text()))
    for backend in ("onnx", "openvino"):
        a, b = exported[backend]["gate"]["figures"], quantized[backend]["gate"]["figures"]
        assert abs(a["mean_cosine"] - b["mean_cosine"]) <= 0.002, (backend, a, b)


def test_auto_runs_the_quantized_int8_and_files_are_checked(quantized_hub_folder, tmp_path):
    folder, _ = quantized_hub_folder
    proc = run_without_torch(f"""
import json
from granite_rt import Embedder
for backend in ("onnx", "openvino"):
    model = Embedder({str(folder)!r}, backend=backend, device="cpu")
    print(json.dumps([backend, model.info["dtype"], model.info["file"]]))
""")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines == [["onnx", "int8", "onnx/model_qint8.onnx"],
                     ["openvino", "int8", "openvino/openvino_model_qint8_quantized.xml"]]
    again = run_without_torch(f"""
import sys
from granite_rt.cli import main
sys.exit(main(["quantize", {str(folder)!r}, "--formats", "onnx-int8"]))
""".replace("sys.exit(main", "code = main").replace("]))", "])\nprint('rc', code)"))
    assert "rc 1" in again.stdout and "--force" in again.stderr
