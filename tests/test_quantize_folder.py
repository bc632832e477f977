"""``granite-rt quantize`` in a process where torch and transformers cannot be imported: IBM's Hub layout of
all-MiniLM-L6-v2 (fp32 ONNX + OpenVINO IR, no manifest) gets static INT8 files that pass the INT8 gate and are as
good as the export's own INT8 (same recipe: mean cosine to fp32 within 0.002)."""

from __future__ import annotations

import json
import shutil

import pytest

from granite_rt import devices, host

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
    # the ONNX file's six FFN down-projections are INT8 but for their outlier channels, and it still passes
    assert _int8(manifest)["onnx"]["quantization"]["down_projections"].startswith("6 split by input channel")
    ov_recipe = _int8(manifest)["openvino"]["quantization"]          # and so are the IR's, SmoothQuant off them
    assert ov_recipe["down_projections"].startswith("6 split by input channel"), ov_recipe
    assert ov_recipe["smooth_quant"].startswith("granite-rt") and "split_down_projections_missed" not in ov_recipe
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
    # OpenVINO's INT8 IR runs as int8, or as int8+bf16 (bf16 for its unquantized ops) on CPUs with VNNI and BF16
    # where OpenVINO leads the CPU order for an embedder's default (query) loads: on none measured so far (a Zen 4
    # for batches only; not a Xeon, with or without AMX)
    flags = host.cpu_flags()
    leads = devices.openvino_leads_cpu(host.cpu_vendor(), flags, queries=True)
    ov_int8 = "int8+bf16" if leads and {"avx512_bf16", "avx512_vnni"} <= flags else "int8"
    assert lines == [["onnx", "int8", "onnx/model_qint8.onnx"],
                     ["openvino", ov_int8, "openvino/openvino_model_qint8_quantized.xml"]]
    again = run_without_torch(f"""
import sys
from granite_rt.cli import main
sys.exit(main(["quantize", {str(folder)!r}, "--formats", "onnx-int8"]))
""".replace("sys.exit(main", "code = main").replace("]))", "])\nprint('rc', code)"))
    assert "rc 1" in again.stdout and "--force" in again.stderr


def test_auto_passes_over_ibms_dynamic_int8_and_points_to_quantize(minilm_folders, tmp_path):
    """A folder whose only INT8 is dynamic (as IBM ships model_quint8_avx2.onnx): measured here, that file's vectors
    change with their batch neighbours, so auto runs fp32 and says why; dtype="int8" still runs it, with a warning."""
    import warnings

    import numpy as np
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from granite_rt import Embedder
    from granite_rt.batching import MAX_BATCH_TOKENS
    from test_batching import varied_texts

    folder = tmp_path / "ibm-layout"
    shutil.copytree(minilm_folders["hub"], folder)
    quantize_dynamic(str(folder / "onnx/model.onnx"), str(folder / "onnx/model_quint8_avx2.onnx"),
                     weight_type=QuantType.QUInt8)
    auto = Embedder(folder, backend="onnx")
    assert (auto.info["dtype"], auto.info["file"]) == ("fp32", "onnx/model.onnx")
    assert "model_quint8_avx2.onnx skipped: dynamic INT8" in auto.info["why"]
    assert "granite-rt quantize" in auto.info["why"]
    with pytest.warns(UserWarning, match="NOT recommended: dynamic INT8"):
        dynamic = Embedder(folder, backend="onnx", dtype="int8")
    dynamic.batch_overhead_tokens = MAX_BATCH_TOKENS
    texts = varied_texts(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        together = dynamic.encode(texts)
        alone = np.concatenate([dynamic.encode([t]) for t in texts])
    cosines = (together * alone).sum(1)
    assert cosines.min() < 0.9999, float(cosines.min())  # the measurement behind the decision
