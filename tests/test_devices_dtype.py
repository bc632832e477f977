"""What actually runs: dtype="auto" picks the INT8 artifact, OpenVINO's precision hint is explicit, IO binding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from granite_rt import Embedder
from granite_rt.backends import open_backend
from granite_rt.backends.base import Artifact, Placement
from granite_rt.backends.onnxruntime import OrtOptions
from granite_rt.batching import pad_batch

TEXTS = ["What is the chemical formula of water?", "Water is H2O.", "boundary layer flow " * 20]


@pytest.fixture(scope="module")
def with_int8(tiny_embedder_folders, tmp_path_factory) -> Path:
    """IBM layout with fp32 and INT8 files for both backends (static ONNX INT8 of granite_rt.int8_recipe, NNCF
    int8 weights; a dynamic ONNX INT8 is passed over by auto, see test_quantize_folder)."""
    import nncf
    import openvino as ov

    from granite_rt.int8_recipe import calibration_feeds, graph_inputs, load_calibration, quantize_onnx

    folder = Path(shutil.copytree(tiny_embedder_folders["hub"], tmp_path_factory.mktemp("int8") / "hub"))
    source = folder / "onnx" / "model.onnx"
    calibration = load_calibration(None, "tiny", 0)
    quantize_onnx(source, folder / "onnx" / "model_qint8.onnx",
                  calibration_feeds(calibration, folder, graph_inputs(source), 8), calibration)
    compressed = nncf.compress_weights(ov.Core().read_model(str(folder / "openvino" / "openvino_model.xml")))
    ov.save_model(compressed, str(folder / "openvino" / "openvino_model_qint8_quantized.xml"))
    return folder


def test_auto_dtype_on_cpu_picks_int8_openvino_first(with_int8, vnni_cpu):
    import openvino as ov

    emb = Embedder(with_int8)  # backend, device and dtype all "auto"
    from granite_rt.backends.openvino import amx_int8_bf16_wrong

    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") and not amx_int8_bf16_wrong()
    assert (emb.info["backend"], emb.info["dtype"]) == ("openvino", "int8+bf16" if bf16 else "int8")
    assert emb.info["inference_precision"] == ("bf16" if bf16 else "f32")  # the hint OpenVINO compiled with
    assert emb.info["files"] == ["openvino/openvino_model_qint8_quantized.xml",
                                 "openvino/openvino_model_qint8_quantized.bin"]
    onnx = Embedder(with_int8, backend="onnx")
    assert (onnx.info["dtype"], onnx.info["files"]) == ("int8", ["onnx/model_qint8.onnx", "onnx/model_qint8.onnx_data"])
    fp32 = Embedder(with_int8, backend="onnx", dtype="fp32").encode(TEXTS)
    for model in (emb, onnx):  # INT8 stays close to fp32 on real vectors
        assert ((model.encode(TEXTS) * fp32).sum(axis=1) > 0.9).all()



def test_where_openvino_leads_only_batches_an_embedder_query_load_runs_onnxruntime_int8(with_int8, vnni_cpu,
                                                                                        monkeypatch):
    """The Zen 4 rule (devices.openvino_leads_cpu): an embedder's default workload="latency" load runs
    onnxruntime INT8, its workload="throughput" load (embed-corpus) the OpenVINO INT8 IR."""
    from granite_rt import devices

    monkeypatch.setattr(devices, "openvino_leads_cpu", lambda vendor, flags, queries=False: not queries)
    query = Embedder(with_int8)
    assert (query.info["backend"], query.info["dtype"]) == ("onnx", "int8")
    assert "embedder's queries" in query.info["why"]
    batches = Embedder(with_int8, workload="throughput")
    assert (batches.info["backend"], batches.info["dtype"][:4]) == ("openvino", "int8")
    np.testing.assert_allclose(query.encode(TEXTS), batches.encode(TEXTS), atol=0.05)

def test_auto_on_a_cpu_without_int8_dot_products_runs_onnxruntime_int8(with_int8, avx2_cpu):
    emb = Embedder(with_int8)
    assert (emb.info["backend"], emb.info["dtype"]) == ("onnx", "int8")
    assert "no int8 dot-product instructions" in emb.info["why"]
    ov = Embedder(with_int8, backend="openvino")
    assert (ov.info["dtype"], ov.info["files"][0]) == ("fp32", "openvino/openvino_model.xml")
    assert Embedder(with_int8, backend="openvino", dtype="int8").info["dtype"] == "int8"  # still there when asked


def test_auto_dtype_without_int8_uses_fp32(tiny_embedder_folders):
    emb = Embedder(tiny_embedder_folders["export"])
    assert (emb.info["dtype"], emb.info["files"]) == ("fp32", ["onnx/model.onnx", "onnx/model.onnx_data"])


def test_openvino_precision_hint_is_explicit(tiny_embedder_folders):
    """OpenVINO would compute in bf16 by default on CPUs that have it: fp32 must stay fp32."""
    import openvino as ov

    fp32 = Embedder(tiny_embedder_folders["hub"], backend="openvino", dtype="fp32")
    assert fp32.info["inference_precision"] == "f32"
    reference = Embedder(tiny_embedder_folders["hub"], backend="onnx", dtype="fp32").encode(TEXTS)
    assert np.abs(fp32.encode(TEXTS) - reference).max() < 1e-5
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: the bf16 hint cannot be observed")
    bf16 = Embedder(tiny_embedder_folders["hub"], backend="openvino", dtype="bf16")
    assert bf16.info["inference_precision"] == "bf16"
    vectors = bf16.encode(TEXTS)
    assert np.abs(vectors - reference).max() > 1e-5  # the hint took effect...
    assert ((vectors * reference).sum(axis=1) > 0.99).all()  # ...and bf16 is still close


def test_bf16_on_an_amx_cpu_gives_every_openvino_stream_two_threads(tiny_embedder_folders, monkeypatch):
    """One thread per stream kills the process there (openvino.amx_bf16_streams_need_two_threads): refused with
    the reason at one thread in all, THROUGHPUT gets one stream per two threads. On a real AMX CPU a broken
    guard ends this test with SIGFPE."""
    from granite_rt import host
    from granite_rt.backends.openvino import OpenVINOOptions, amx_bf16_streams_need_two_threads
    from granite_rt.errors import DeviceUnavailableError

    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_bf16", "amx_bf16", "amx_int8"}))
    folder = tiny_embedder_folders["hub"]
    ir = Artifact("openvino/openvino_model.xml", "openvino", "fp32")
    batched = Placement("openvino", "cpu", "bf16", ir, OpenVINOOptions("CPU", {"PERFORMANCE_HINT": "THROUGHPUT"}))
    with pytest.raises(DeviceUnavailableError, match="1 thread .* threads >= 2"):
        open_backend(folder, batched, threads=1)
    with pytest.raises(DeviceUnavailableError, match="1 thread"):
        Embedder(folder, backend="openvino", dtype="bf16", threads=1)
    backend = open_backend(folder, batched, threads=2)
    assert int(backend.compiled.get_property("NUM_STREAMS")) == 1 and backend.parallel_requests == 1
    reference = Embedder(folder, backend="onnx", dtype="fp32")
    batch = pad_batch(reference.tokenizer.encode(TEXTS), reference.tokenizer.pad_id)
    assert backend.run(batch).shape[0] == len(TEXTS)
    assert not amx_bf16_streams_need_two_threads("CPU", "int8+bf16")   # the INT8 IR compiles at one thread
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_bf16"}))   # Zen 4: no AMX
    assert not amx_bf16_streams_need_two_threads("CPU", "bf16")


def test_threads_and_io_binding_give_the_same_outputs(tiny_embedder_folders):
    folder = tiny_embedder_folders["hub"]
    artifact = Artifact("onnx/model.onnx", "onnx", "fp32")
    plain = open_backend(folder, Placement("onnx", "cpu", "fp32", artifact), threads=1)
    bound = open_backend(folder, Placement("onnx", "cpu", "fp32", artifact, OrtOptions(io_binding=True)), threads=2)
    emb = Embedder(folder, backend="onnx", dtype="fp32")
    batch = pad_batch(emb.tokenizer.encode(TEXTS), emb.tokenizer.pad_id)
    np.testing.assert_allclose(bound.run(batch), plain.run(batch), atol=1e-5)
    assert plain.session.get_session_options().intra_op_num_threads == 1
