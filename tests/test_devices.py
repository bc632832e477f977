"""Device selection and fallback as pure logic: faked inventories, faked openers that fail."""

from __future__ import annotations

import dataclasses
import types
import warnings
from pathlib import Path

import pytest

from granite_rt import devices, host
from granite_rt.backends.base import Artifact, EngineInventory, Placement
from granite_rt.devices import DeviceFallbackWarning, Inventory, open_with_fallback, select_placements
from granite_rt.errors import BackendUnavailableError, DeviceUnavailableError, ModelFileError

ONNX32 = Artifact("onnx/model.onnx", "onnx", "fp32")
ONNX16 = Artifact("onnx/model_fp16.onnx", "onnx", "fp16")
ONNX8 = Artifact("onnx/model_qint8.onnx", "onnx", "int8")
OV32 = Artifact("openvino/openvino_model.xml", "openvino", "fp32")
OV8 = Artifact("openvino/openvino_model_qint8_quantized.xml", "openvino", "int8")
ALL = [ONNX32, ONNX16, ONNX8, OV32, OV8]


@pytest.fixture(autouse=True)
def cpu_without_amx(monkeypatch):
    """The faked inventories describe CPUs without AMX (on AMX int8+bf16 is refused: openvino.amx_int8_bf16_wrong),
    whatever CPU runs the tests; a test of AMX sets its own flags."""
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))



def inventory(providers=("CPUExecutionProvider",), dists=("onnxruntime",), ov_devices=None, names=None, caps=None,
              ov_error="No module") -> Inventory:
    """A faked machine: onnxruntime 1.32.0 with ``providers``; OpenVINO 2026.4.1 with ``ov_devices`` (None: absent)."""
    ort = EngineInventory("1.32.0", tuple(providers), distributions=tuple(dists))
    ov = (EngineInventory("2026.4.1", tuple(ov_devices), names or {}, caps or {}) if ov_devices is not None
          else EngineInventory(error=ov_error))
    return Inventory({"onnx": ort, "openvino": ov})


CPU_ONLY = inventory(ov_devices=("CPU",), names={"CPU": "Xeon"}, caps={"CPU": ("FP32", "INT8")})
NVIDIA = inventory(("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), ("onnxruntime-gpu",),
                   ov_devices=("CPU", "GPU.0", "NPU"), caps={"CPU": ("FP32", "INT8", "BF16")})
WINDOWS = inventory(("DmlExecutionProvider", "CPUExecutionProvider"), ("onnxruntime-directml",))
NO_OPENVINO = inventory()


def plan(inv: Inventory, artifacts=ALL, **kw) -> list[Placement]:
    return select_placements(artifacts, inventory=inv, cache_dir=Path("/cache"), **kw)


def summary(placements: list[Placement]) -> list[tuple[str, str, str, str]]:
    return [(p.device, p.backend, p.dtype, p.artifact.path) for p in placements]


# ---- selection -------------------------------------------------------------------------------------

def test_auto_on_cpu_prefers_openvino_int8_then_onnxruntime_int8():
    assert summary(plan(CPU_ONLY)) == [("cpu", "openvino", "int8", OV8.path), ("cpu", "onnx", "int8", ONNX8.path)]


def test_auto_without_openvino_runs_onnxruntime_int8():
    assert summary(plan(NO_OPENVINO)) == [("cpu", "onnx", "int8", ONNX8.path)]


def test_auto_walks_tensorrt_cuda_intel_gpu_cpu_and_leaves_the_npu_out():
    got = plan(NVIDIA)
    assert summary(got) == [("tensorrt", "onnx", "fp16", ONNX32.path), ("cuda", "onnx", "fp16", ONNX16.path),
                            ("intel-gpu", "openvino", "fp16", OV32.path), ("cpu", "openvino", "int8+bf16", OV8.path),
                            ("cpu", "onnx", "int8", ONNX8.path)]  # this CPU reports BF16: the INT8 IR, bf16 elsewhere
    assert all(p.device != "npu" for p in got)


def test_tensorrt_gets_fp16_engine_cache_and_cuda_fallback_inside_the_session():
    trt = plan(NVIDIA, device="tensorrt")[0]
    (name, opts), (cuda, _), cpu = trt.options.providers
    assert (name, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert Path(opts["trt_engine_cache_path"]).parent == Path("/cache/tensorrt")
    assert trt.options.io_binding
    fp32 = plan(NVIDIA, device="tensorrt", dtype="fp32")[0]
    assert fp32.options.providers[0][1]["trt_fp16_enable"] is False


def test_engine_cache_is_keyed_per_model_file():
    a = plan(NVIDIA, [Artifact("onnx/model.onnx", "onnx", "fp32", sha256="a" * 64)], device="tensorrt")[0]
    b = plan(NVIDIA, [Artifact("onnx/model.onnx", "onnx", "fp32", sha256="b" * 64)], device="tensorrt")[0]
    assert a.options.providers[0][1]["trt_engine_cache_path"] != b.options.providers[0][1]["trt_engine_cache_path"]


def test_cuda_uses_io_binding_and_the_fp16_artifact():
    cuda = plan(NVIDIA, device="cuda")[0]
    assert cuda.options.providers[0][0] == "CUDAExecutionProvider" and cuda.options.io_binding and cuda.artifact == ONNX16


def test_directml_carries_its_required_session_options():
    dml = plan(WINDOWS, device="directml")[0]
    assert dml.options.session_options == {"enable_mem_pattern": False, "execution_mode": "ORT_SEQUENTIAL"}
    assert (dml.dtype, dml.artifact) == ("fp16", ONNX16) and not dml.options.io_binding


def test_missing_fp16_artifact_falls_back_to_fp32_and_says_why():
    cuda = plan(NVIDIA, [ONNX32, ONNX8], device="cuda")[0]
    assert (cuda.dtype, cuda.artifact) == ("fp32", ONNX32)
    assert "no fp16" in cuda.why


def test_openvino_hints_are_explicit_and_compiled_models_cached_per_file(monkeypatch):
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_vnni", "avx512_bf16"}))   # no AMX
    gpu, cpu = (p for p in plan(NVIDIA, backend="openvino") if p.device in ("intel-gpu", "cpu"))
    assert gpu.options.device == "GPU" and gpu.options.config["INFERENCE_PRECISION_HINT"] == "f16"
    assert gpu.options.config["CACHE_DIR"] == str(Path("/cache/openvino") / devices.artifact_key(gpu.artifact, None))
    assert cpu.options.config == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16",  # int8+bf16
                             "CACHE_DIR": str(Path("/cache/openvino") / devices.artifact_key(cpu.artifact, None))}
    assert gpu.options.config["CACHE_DIR"] != cpu.options.config["CACHE_DIR"]  # fp16 vs INT8 file
    batch = plan(CPU_ONLY, backend="openvino", workload="throughput")[0]
    assert batch.options.config["PERFORMANCE_HINT"] == "THROUGHPUT"


def test_on_an_amx_cpu_int8_bf16_is_refused_and_bf16_compiles_skip_the_openvino_cache(monkeypatch):
    """int8+bf16 gave wrong vectors there (openvino.amx_int8_bf16_wrong): auto and tune pass over it, asking for it
    says why. bf16 blobs cached there crashed or gave wrong vectors (openvino.bf16_cache_unsafe); f32-hint ones
    stay cached."""
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}))
    auto = [p for p in plan(NVIDIA, backend="openvino", device="cpu")]
    assert [(p.dtype, p.artifact) for p in auto][:1] == [("int8", OV8)]
    assert "passed over: dtype='int8+bf16' on the OpenVINO CPU gives wrong vectors" in auto[0].why
    assert "int8+bf16" not in {p.dtype for p in devices.cpu_candidates(ALL, inventory=NVIDIA)}
    for device in ("cpu", "auto"):   # asked for on any device: the reason, not only "no device here"
        with pytest.raises(DeviceUnavailableError, match="wrong vectors on CPUs with AMX-BF16"):
            plan(NVIDIA, backend="openvino", device=device, dtype="int8+bf16")
    hinted = {p.dtype: p for p in auto + plan(NVIDIA, backend="openvino", device="cpu", dtype="bf16")}
    assert hinted["bf16"].options.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert "CACHE_DIR" not in hinted["bf16"].options.config
    assert hinted["int8"].options.config["CACHE_DIR"].startswith(str(Path("/cache/openvino")))
    gpu = plan(NVIDIA, backend="openvino", device="intel-gpu")[0]   # the GPU's blobs are not the CPU plugin's
    assert "CACHE_DIR" in gpu.options.config


def test_granite_rt_cache_off_turns_every_on_disk_cache_off(monkeypatch):
    monkeypatch.setenv("GRANITE_RT_CACHE", "off")
    placements = select_placements(ALL, inventory=NVIDIA, backend="auto", device="auto")
    trt = next(p for p in placements if p.device == "tensorrt")
    assert "trt_engine_cache_enable" not in trt.options.providers[0][1]
    assert all("CACHE_DIR" not in p.options.config for p in placements if p.backend == "openvino")
    monkeypatch.setenv("GRANITE_RT_CACHE", "/somewhere")
    assert host.cache_dir() == Path("/somewhere")


def test_cache_key_of_a_folder_without_manifest_follows_each_file_of_the_artifact(tmp_path):
    """OpenVINO's own cache check looks at the .xml only: a replaced .bin must get a new key too."""
    (tmp_path / "openvino").mkdir()
    xml, weights = tmp_path / OV32.path, (tmp_path / OV32.path).with_suffix(".bin")
    xml.write_text("<net/>")
    weights.write_bytes(b"1234")
    key = devices.artifact_key(OV32, tmp_path)
    assert devices.artifact_key(OV32, tmp_path) == key
    weights.write_bytes(b"123456")
    assert devices.artifact_key(OV32, tmp_path) != key
    with_manifest = Artifact(OV32.path, "openvino", "fp32", "a" * 64, ((OV32.path, "a" * 64), ("x.bin", "b" * 64)))
    changed_bin = Artifact(OV32.path, "openvino", "fp32", "a" * 64, ((OV32.path, "a" * 64), ("x.bin", "c" * 64)))
    assert devices.artifact_key(with_manifest, tmp_path) != devices.artifact_key(changed_bin, tmp_path)


def test_npu_only_by_name_with_static_shape_buckets():
    npu = plan(NVIDIA, device="npu")
    assert [p.device for p in npu] == ["npu"]
    assert npu[0].options.static_shapes and all(b >= 1 and s >= 1 for b, s in npu[0].options.static_shapes)
    assert npu[0].options.config["INFERENCE_PRECISION_HINT"] == "f16"


def test_bf16_needs_a_cpu_that_reports_it():
    bf16 = plan(NVIDIA, backend="openvino", device="cpu", dtype="bf16")[0]
    assert (bf16.options.config["INFERENCE_PRECISION_HINT"], bf16.artifact) == ("bf16", OV32)
    with pytest.raises(DeviceUnavailableError, match="BF16"):
        plan(CPU_ONLY, backend="openvino", device="cpu", dtype="bf16")


def test_explicit_dtype_skips_devices_that_cannot_run_it():
    assert summary(plan(NVIDIA, dtype="int8"))[0] == ("intel-gpu", "openvino", "int8", OV8.path)
    assert summary(plan(NVIDIA, backend="onnx", dtype="int8")) == [("cpu", "onnx", "int8", ONNX8.path)]
    with pytest.raises(ValueError, match="int8.*not supported on device 'cuda'"):
        plan(NVIDIA, device="cuda", dtype="int8")


def test_explicit_absent_device_raises_with_the_fix_unless_fallback_is_allowed():
    with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
        plan(CPU_ONLY, device="cuda")
    with pytest.raises(DeviceUnavailableError, match="GPU driver"):
        plan(CPU_ONLY, device="intel-gpu")
    got = plan(CPU_ONLY, device="cuda", allow_fallback=True)
    assert [p.device for p in got] == ["cuda", "cpu", "cpu"]


def test_bad_choices_name_the_problem():
    with pytest.raises(ValueError, match="device='gpu'"):
        plan(CPU_ONLY, device="gpu")
    with pytest.raises(ValueError, match="dtype='float16'"):
        plan(CPU_ONLY, dtype="float16")
    with pytest.raises(ValueError, match="runs on openvino"):
        plan(NVIDIA, backend="onnx", device="intel-gpu")
    with pytest.raises(BackendUnavailableError, match="granite-rt\\[openvino\\]"):
        plan(NO_OPENVINO, backend="openvino")
    with pytest.raises(ModelFileError, match="onnx/model.onnx"):
        plan(CPU_ONLY, [ONNX32], backend="openvino", device="cpu")
    with pytest.raises(DeviceUnavailableError, match="no device here"):
        plan(NO_OPENVINO, [OV32])


def test_raw_provider_list_is_used_as_given():
    got = plan(NVIDIA, device=[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert len(got) == 1
    assert got[0].options.providers == (("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider")
    assert (got[0].device, got[0].dtype, got[0].artifact) == ("cuda", "fp16", ONNX16)
    with pytest.raises(DeviceUnavailableError, match="TensorrtExecutionProvider"):
        plan(CPU_ONLY, device=["TensorrtExecutionProvider"])
    with pytest.raises(TypeError, match="neither a provider name"):
        plan(NVIDIA, device=[("CUDAExecutionProvider",)])
    with pytest.raises(ValueError, match="backend='onnx'"):
        plan(NVIDIA, device=["CPUExecutionProvider"], backend="openvino")


def test_a_model_spec_is_accepted_in_place_of_its_artifacts():
    spec = types.SimpleNamespace(artifacts=(ONNX32,))
    assert summary(plan(NO_OPENVINO, spec)) == [("cpu", "onnx", "fp32", ONNX32.path)]


# ---- fallback --------------------------------------------------------------------------------------

class FakeBackend:
    def __init__(self, placement: Placement, providers=None):
        self.placement, self.input_names = placement, ("input_ids", "attention_mask")
        self._providers = providers

    def describe(self):
        out = {"backend": self.placement.backend, "device": self.placement.device}
        if self.placement.backend == "onnx":
            out["providers"] = self._providers or [p if isinstance(p, str) else p[0] for p in self.placement.options.providers]
        return out


def failing_on(*devices_that_fail, error=RuntimeError("libcudnn.so.9: cannot open shared object file")):
    calls = []

    def opener(folder, placement, threads=None):
        calls.append(placement.device)
        if placement.device in devices_that_fail:
            raise error
        return FakeBackend(placement)
    opener.calls = calls
    return opener


def test_failed_session_falls_back_with_one_warning_and_info():
    opener = failing_on("tensorrt", "cuda")
    with pytest.warns(DeviceFallbackWarning) as record:
        backend, sel = open_with_fallback(Path("m"), plan(NVIDIA), opener, explicit=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "tensorrt" in message and "cuda" in message and "libcudnn" in message
    assert "Running on intel-gpu (openvino, fp16, openvino/openvino_model.xml)" in message
    assert opener.calls == ["tensorrt", "cuda", "intel-gpu"]
    assert backend.placement.device == "intel-gpu" and sel.placement is backend.placement
    info = sel.info()
    assert (info["device"], info["backend"], info["dtype"], info["file"]) == ("intel-gpu", "openvino", "fp16",
                                                                              OV32.path)
    assert len(info["fallbacks"]) == 2 and "libcudnn" in info["fallbacks"][0]


def test_no_warning_when_the_first_candidate_opens():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, sel = open_with_fallback(Path("m"), plan(CPU_ONLY), failing_on(), explicit=False)
    assert sel.failed == () and sel.info()["fallbacks"] == []


def test_explicit_device_that_fails_raises_instead_of_running_elsewhere():
    placements = plan(NVIDIA, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeviceUnavailableError, match="libcudnn.*allow_fallback=True"):
            open_with_fallback(Path("m"), placements, failing_on("cuda"), explicit=True)


def test_explicit_device_with_allow_fallback_moves_on_and_warns():
    opener = failing_on("cuda")
    with pytest.warns(DeviceFallbackWarning, match="cuda .*failed"):
        backend, sel = open_with_fallback(Path("m"), plan(NVIDIA, device="cuda", allow_fallback=True), opener,
                                          explicit=False)
    assert sel.placement.device != "cuda" and sel.failed[0].placement.device == "cuda"


def test_explicit_cpu_may_change_backend_but_not_device():
    def opener(folder, placement, threads=None):
        if placement.backend == "openvino":
            raise RuntimeError("plugin failed")
        return FakeBackend(placement)
    with pytest.warns(DeviceFallbackWarning, match="plugin failed"):
        _, sel = open_with_fallback(Path("m"), plan(CPU_ONLY, device="cpu"), opener, explicit=True)
    assert (sel.placement.device, sel.placement.backend) == ("cpu", "onnx")


def test_onnxruntime_silently_dropping_the_provider_counts_as_a_failure():
    def opener(folder, placement, threads=None):
        return FakeBackend(placement, providers=["CPUExecutionProvider"])  # what ORT does without CUDA libs
    with pytest.raises(DeviceUnavailableError, match="did not enable CUDAExecutionProvider"):
        open_with_fallback(Path("m"), plan(NVIDIA, device="cuda"), opener, explicit=True)


def test_broken_model_file_is_not_hidden_by_falling_back():
    opener = failing_on("tensorrt", error=ModelFileError("onnx/model.onnx is truncated"))
    with pytest.raises(ModelFileError, match="truncated"):
        open_with_fallback(Path("m"), plan(NVIDIA), opener, explicit=False)
    assert opener.calls == ["tensorrt"]


def test_every_candidate_failing_lists_every_reason():
    with pytest.raises(DeviceUnavailableError) as err:
        open_with_fallback(Path("m"), plan(CPU_ONLY), failing_on("cpu"), explicit=False)
    assert str(err.value).count("libcudnn") == 2 and "openvino" in str(err.value)


def test_open_best_plans_and_opens_with_the_threads_given():
    seen = {}

    def opener(folder, placement, threads=None):
        seen.update(folder=folder, threads=threads)
        return FakeBackend(placement)
    backend, sel = devices.open_best(Path("m"), ALL, device="cpu", threads=3, opener=opener, inventory=CPU_ONLY)
    assert seen == {"folder": Path("m"), "threads": 3} and sel.placement.backend == "openvino"


def test_cpu_auto_order_follows_int8_dot_products():
    vnni = dataclasses.replace(CPU_ONLY, cpu_int8_dot=("avx512_vnni",))
    avx2 = dataclasses.replace(CPU_ONLY, cpu_int8_dot=())
    assert summary(plan(vnni)) == [("cpu", "openvino", "int8", OV8.path), ("cpu", "onnx", "int8", ONNX8.path)]
    first, second = plan(avx2)  # onnxruntime's INT8 first; OpenVINO's fp32 before its slower INT8
    assert (first.backend, first.dtype, first.artifact) == ("onnx", "int8", ONNX8)
    assert "onnxruntime before OpenVINO" in first.why and "no int8 dot-product" in first.why
    assert (second.backend, second.dtype, second.artifact) == ("openvino", "fp32", OV32)
    assert plan(avx2, backend="openvino", dtype="int8")[0].artifact == OV8  # still there when asked for
    assert [d.backend for d in devices.available_devices(avx2)] == ["onnx", "openvino"]
    assert [d.backend for d in devices.available_devices(vnni)] == ["openvino", "onnx"]



@pytest.mark.parametrize("vendor, flags, leads, leads_queries", [
    ("AuthenticAMD", "avx2 avx512f avx512_vnni avx512_bf16", True, False),   # Zen 4: int8+bf16 batches, ORT int8 queries
    ("GenuineIntel", "avx2 avx512f avx512_vnni avx_vnni avx512_bf16 avx512_fp16", False, False),  # Xeon, no AMX: ORT int8
    ("GenuineIntel", "avx512_vnni avx512_bf16 amx_bf16 amx_int8", False, False),      # AMX: ORT int8 (int8+bf16 wrong)
    ("AuthenticAMD", "avx2 fma", False, False),                                      # Zen 3, AVX2 only
    ("", "fp asimd asimddp", False, False),                                          # Arm
    ("", "", None, None),                                                            # unknown: the registry's order
])
def test_openvino_leads_the_cpu_only_where_it_was_measured_fastest(vendor, flags, leads, leads_queries):
    assert devices.openvino_leads_cpu(vendor, frozenset(flags.split())) is leads
    assert devices.openvino_leads_cpu(vendor, frozenset(flags.split()), queries=True) is leads_queries


def test_on_a_zen4_an_embedders_latency_load_runs_onnxruntime_int8_and_batch_loads_openvino_int8_bf16():
    zen4 = dataclasses.replace(ZEN4, openvino_leads_cpu=True, openvino_leads_cpu_queries=False)
    query = plan(zen4, kind="embedder")[0]
    assert (query.backend, query.dtype, query.artifact) == ("onnx", "int8", ONNX8)
    assert "measured fastest for an embedder's queries" in query.why and "workload='throughput'" in query.why
    ov = plan(zen4, kind="embedder", backend="openvino")[0]   # the f32 hint: int8+bf16 was slower on queries too
    assert (ov.dtype, ov.options.config["INFERENCE_PRECISION_HINT"]) == ("int8", "f32")
    for kind, workload in (("embedder", "throughput"), ("reranker", "latency"), ("reranker", "throughput"),
                           (None, "latency")):
        first = plan(zen4, kind=kind, workload=workload)[0]
        assert (first.backend, first.dtype) == ("openvino", "int8+bf16"), (kind, workload)
    assert zen4.for_queries().openvino_leads_cpu is False and ZEN4.for_queries() is ZEN4
    assert [d.backend for d in devices.available_devices(zen4)] == ["openvino", "onnx"]   # the batches' order


def test_a_vnni_cpu_where_openvino_does_not_lead_runs_onnxruntime_int8_and_no_bf16_hint():
    bf16 = dataclasses.replace(inventory(ov_devices=("CPU",), caps={"CPU": ("FP32", "INT8", "BF16")}),
                               cpu_int8_dot=("avx512_vnni",))
    xeon = dataclasses.replace(bf16, openvino_leads_cpu=False)
    first, second = plan(xeon)
    assert (first.backend, first.dtype, first.artifact) == ("onnx", "int8", ONNX8)
    assert "onnxruntime before OpenVINO (measured fastest on CPUs like this one" in first.why
    assert (second.backend, second.dtype, second.artifact) == ("openvino", "int8", OV8)   # the f32 hint, not bf16
    assert second.options.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert plan(xeon, backend="openvino", dtype="int8+bf16")[0].dtype == "int8+bf16"        # still there when asked
    assert [p.dtype for p in devices.cpu_candidates([OV8], inventory=xeon)] == ["int8", "int8+bf16"]  # tune times it
    assert (plan(bf16)[0].backend, plan(bf16)[0].dtype) == ("openvino", "int8+bf16")      # unknown CPU: as before
    assert [d.backend for d in devices.available_devices(xeon)] == ["onnx", "openvino"]

def test_auto_skips_an_int8_the_gate_failed_and_prefers_the_other_backends_int8():
    """OpenVINO's INT8 marked not recommended: auto runs onnxruntime's gated INT8 first, then OpenVINO fp32."""
    failed = dataclasses.replace(OV8, not_recommended="failed the INT8 gate (p1 cosine 0.9500 < 0.97)")
    placements = plan(CPU_ONLY, [ONNX32, ONNX8, OV32, failed])
    assert summary(placements) == [("cpu", "onnx", "int8", ONNX8.path), ("cpu", "openvino", "fp32", OV32.path)]
    assert "p1 cosine 0.9500 < 0.97" in placements[1].why and "skipped" in placements[1].why
    assert "before openvino" in placements[0].why and "p1 cosine" in placements[0].why
    only = plan(CPU_ONLY, [ONNX32, OV32, failed])
    assert summary(only)[0] == ("cpu", "openvino", "fp32", OV32.path)
    forced = plan(CPU_ONLY, [ONNX32, OV32, failed], dtype="int8")
    assert forced[0].artifact == failed and "NOT recommended: failed the INT8 gate" in forced[0].why


ZEN4 = dataclasses.replace(inventory(ov_devices=("CPU",), caps={"CPU": ("FP32", "INT8", "BF16")}),
                           cpu_int8_dot=("avx512_vnni",))


def test_cpu_with_int8_dot_products_and_bf16_runs_the_int8_ir_with_a_bf16_hint():
    first, second = plan(ZEN4)
    assert (first.backend, first.dtype, first.artifact) == ("openvino", "int8+bf16", OV8)
    assert first.options.config["INFERENCE_PRECISION_HINT"] == "bf16" and "BF16" in first.why
    assert (second.backend, second.dtype) == ("onnx", "int8")  # onnxruntime has no such mode: its INT8
    exact = plan(ZEN4, dtype="int8")[0]                       # dtype="int8" stays exact outside the INT8 ops
    assert (exact.dtype, exact.options.config["INFERENCE_PRECISION_HINT"]) == ("int8", "f32")
    no_bf16 = dataclasses.replace(ZEN4, engines={**ZEN4.engines, "openvino": dataclasses.replace(
        ZEN4.engine("openvino"), capabilities={"CPU": ("FP32", "INT8")})})
    vnni_only = plan(no_bf16)[0]
    assert (vnni_only.dtype, vnni_only.options.config["INFERENCE_PRECISION_HINT"]) == ("int8", "f32")
    assert "passed over: dtype='int8+bf16' on the OpenVINO CPU needs a CPU with BF16" in vnni_only.why
    with pytest.raises(DeviceUnavailableError, match="BF16"):
        plan(no_bf16, device="cpu", dtype="int8+bf16")
    assert plan(ZEN4, [ONNX32, ONNX8, OV32])[0].dtype == "fp32"  # no INT8 IR: OpenVINO fp32 before onnxruntime


def test_auto_runs_exactly_the_placement_its_explicit_dtype_runs():
    """Issue 21 asked why auto was slower than the bench's explicit OpenVINO INT8 contender on (b): the two
    are one placement (file, hints, streams, threads, cache), so only run-to-run spread can separate them."""
    no_bf16 = dataclasses.replace(ZEN4, engines={**ZEN4.engines, "openvino": dataclasses.replace(
        ZEN4.engine("openvino"), capabilities={"CPU": ()})})
    for inv, dtype in ((ZEN4, "int8+bf16"), (no_bf16, "int8")):
        auto = plan(inv)[0]
        explicit = plan(inv, backend="openvino", device="cpu", dtype=dtype)[0]
        assert auto == explicit and auto.options == explicit.options
