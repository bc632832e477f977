"""Each backend's probe of its engine (what ``devices.probe`` asks), faked where the machine lacks the device."""

from __future__ import annotations

import sys
import types

import pytest

from granite_rt import devices, host
from granite_rt.backends import onnxruntime as ort_backend
from granite_rt.backends.base import Artifact, EngineInventory
from granite_rt.backends.onnxruntime import OnnxRuntimeConflictWarning
from granite_rt.devices import Inventory, select_placements
from granite_rt.errors import DeviceUnavailableError
from granite_rt.report import info_report

ONNX32 = Artifact("onnx/model.onnx", "onnx", "fp32")
ONNX16 = Artifact("onnx/model_fp16.onnx", "onnx", "fp16")
OV32 = Artifact("openvino/openvino_model.xml", "openvino", "fp32")
ALL = [ONNX32, ONNX16, OV32]


# ---- the probe seam --------------------------------------------------------------------------------

def test_probe_reads_onnxruntime_providers_and_openvino_devices(monkeypatch, vnni_cpu):
    import onnxruntime

    class FakeCore:
        available_devices = ["CPU", "GPU.0", "GPU.1"]

        def get_property(self, device, name):
            return {"FULL_DEVICE_NAME": f"fake {device}", "OPTIMIZATION_CAPABILITIES": ["FP32", "FP16"]}[name]

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "distributions", lambda: ("onnxruntime-gpu",))
    monkeypatch.setitem(sys.modules, "openvino", types.SimpleNamespace(Core=FakeCore, __version__="2099.1.0-1-abc"))
    monkeypatch.setattr(host, "accelerator_nodes", lambda: True)  # /dev/dri/renderD128 present
    inv = devices.probe()
    ort, ov = inv.engine("onnx"), inv.engine("openvino")
    assert ort.devices == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert ov.devices == ("CPU", "GPU.0", "GPU.1") and ov.version == "2099.1.0"
    assert ov.names["GPU.1"] == "fake GPU.1"
    assert [(d.name, d.backend) for d in devices.available_devices(inv)] == [
        ("cuda", "onnx"), ("intel-gpu", "openvino"), ("cpu", "openvino"), ("cpu", "onnx")]
    assert select_placements(ALL)[0].device == "cuda"  # no inventory given: probe() is asked


def test_probe_knows_the_cpu_onnxruntime_without_importing_it(monkeypatch):
    """The plain `onnxruntime` wheel offers the CPU provider only; importing it would cost ~26 MB when OpenVINO runs."""
    from importlib.metadata import version

    monkeypatch.setattr(ort_backend, "distributions", lambda: ("onnxruntime",))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import would raise ImportError
    inv = devices.probe()
    ort = inv.engine("onnx")
    assert (ort.version, ort.devices, ort.error) == (version("onnxruntime"), ("CPUExecutionProvider",), None)


def test_probe_leaves_openvino_unimported_where_it_can_offer_only_the_cpu(monkeypatch, tmp_path):
    """No GPU/NPU device nodes (Linux): OpenVINO is known from its metadata; imported only when asked for more."""
    from importlib.metadata import version

    asked = []

    class FakeCore:
        available_devices = ["CPU"]

        def get_property(self, device, name):
            asked.append((device, name))
            return ["FP32", "INT8", "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else "fake cpu"

    monkeypatch.setattr(host.platform, "system", lambda: "Linux")
    assert host.accelerator_nodes(tmp_path) is False
    (tmp_path / "dri").mkdir()
    (tmp_path / "dri" / "renderD128").touch()
    assert host.accelerator_nodes(tmp_path) is True

    monkeypatch.setattr(host, "accelerator_nodes", lambda: False)
    monkeypatch.setitem(sys.modules, "openvino", None)  # an import would raise ImportError
    inv = devices.probe()
    ov = inv.engine("openvino")
    assert (ov.version, ov.devices, ov.complete) == (version("openvino"), ("CPU",), False)
    assert {(d.name, d.backend) for d in devices.available_devices(inv)} >= {("cpu", "openvino"), ("cpu", "onnx")}
    with pytest.raises(ImportError):  # bf16 on the OpenVINO CPU needs its capabilities: now it is asked
        select_placements(ALL, backend="openvino", device="cpu", dtype="bf16", inventory=inv)

    monkeypatch.setitem(sys.modules, "openvino", types.SimpleNamespace(Core=FakeCore, __version__="2099.1.0-1-abc"))
    assert select_placements(ALL, backend="openvino", device="cpu", dtype="bf16", inventory=inv)[0].dtype == "bf16"
    assert ("CPU", "OPTIMIZATION_CAPABILITIES") in asked
    full = devices.probe(full=True)  # what `granite-rt info` shows: OpenVINO's own answer
    ov = full.engine("openvino")
    assert ov.complete and ov.version == "2099.1.0" and ov.capabilities["CPU"] == ("FP32", "INT8", "BF16")


# ---- one onnxruntime distribution ------------------------------------------------------------------

def fake_version(*installed):
    """host.installed_version over a fake environment (it normalises names as the real one does)."""
    def version(name):
        return "1.0" if name.replace("_", "-").lower() in {n.replace("_", "-").lower() for n in installed} else None
    return version


def test_onnxruntime_distributions_are_found_among_installed_packages():
    found = ort_backend.distributions(fake_version("numpy", "onnxruntime_gpu", "onnxruntime",
                                                           "onnxruntime-genai"))
    assert found == ("onnxruntime", "onnxruntime-gpu")
    assert ort_backend.distributions(fake_version("numpy")) == ()
    message = ort_backend.onnxruntime_conflict(found)
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in message
    assert ort_backend.onnxruntime_conflict(("onnxruntime-gpu",)) is None


def test_two_onnxruntime_distributions_warn_when_onnxruntime_will_run():
    both = Inventory({"onnx": EngineInventory("1.32.0", ("CPUExecutionProvider",),
                                              distributions=("onnxruntime", "onnxruntime-gpu"))})
    with pytest.warns(OnnxRuntimeConflictWarning, match="pip uninstall"):
        select_placements([ONNX32], inventory=both)
    assert "WARNING: 2 onnxruntime distributions" in info_report(inventory=both)


def test_this_environment_has_exactly_one_onnxruntime():
    assert len(ort_backend.distributions()) == 1



def test_tensorrt_without_its_library_is_absent_with_the_reason(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "distributions", lambda: ("onnxruntime-gpu",))
    monkeypatch.setattr(ort_backend, "TENSORRT_LIBRARY", {"Linux": "libnot-a-tensorrt.so.99",
                                                      "Windows": "not_a_tensorrt.dll", "Darwin": "x"})
    inv = devices.probe()
    providers = inv.engine("onnx").devices
    assert "TensorrtExecutionProvider" not in providers and "CUDAExecutionProvider" in providers
    assert "cannot be loaded" in inv.absent_reason("onnx", "tensorrt")
    assert select_placements(ALL, inventory=inv)[0].device == "cuda"
    with pytest.raises(DeviceUnavailableError, match="TensorRT library"):
        select_placements(ALL, device="tensorrt", inventory=inv)


