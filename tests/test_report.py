"""The ``granite-rt info`` report over faked machines."""

from __future__ import annotations

from granite_rt.backends.base import EngineInventory
from granite_rt.devices import Inventory
from granite_rt.report import info_report

NVIDIA = Inventory({
    "onnx": EngineInventory("1.32.0", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                            distributions=("onnxruntime-gpu",)),
    "openvino": EngineInventory("2026.4.1", ("CPU", "GPU.0", "NPU"), capabilities={"CPU": ("FP32", "INT8", "BF16")}),
})


def test_info_report_lists_backends_and_every_device_with_its_status():
    text = info_report(inventory=NVIDIA)
    assert "onnxruntime 1.32.0 (onnxruntime-gpu): providers TensorrtExecutionProvider" in text
    lines = {tuple(line.split()[:2]): line for line in text.splitlines() if line.startswith("  ")}
    assert lines[("cuda", "onnx")].endswith("available")
    assert "absent" in lines[("directml", "onnx")] and "onnxruntime-directml" in lines[("directml", "onnx")]
    assert lines[("npu", "openvino")].endswith("available")
