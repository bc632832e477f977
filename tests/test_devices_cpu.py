"""Selection, fallback and device settings on the real CPU backends (onnxruntime and OpenVINO)."""

from __future__ import annotations

import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest

from granite_rt import Embedder, available_devices
from granite_rt.backends import open_backend
from granite_rt.backends.onnxruntime import OrtOptions
from granite_rt.devices import DeviceFallbackWarning, open_best, open_with_fallback, select_placements
from granite_rt.report import info_report
from granite_rt.errors import DeviceUnavailableError
from granite_rt.model_folder import load_spec

pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def _openvino_first(vnni_cpu):
    """The CPU order these tests assume (OpenVINO first), whatever CPU runs them (test_devices tests the other)."""


@pytest.fixture(scope="module")
def folder(tiny_embedder_folders):
    return tiny_embedder_folders["hub"]  # IBM layout: onnx/model.onnx and openvino/openvino_model.xml


@pytest.fixture(scope="module")
def spec(folder):
    return load_spec(folder)


def batch(rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 500, size=(rows, length), dtype=np.int64)
    mask = np.ones((rows, length), dtype=np.int64)
    for i in range(rows):  # ragged rows, right-padded as the runtime pads
        mask[i, length - i % 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def masked(out: np.ndarray, inputs) -> np.ndarray:
    """Padded positions zeroed; a CLS-pooled ModernBERT returns the first position alone ([B, 1, H])."""
    return out * inputs["attention_mask"][:, :out.shape[1], None]


def test_both_cpu_backends_open_for_real_and_agree(folder, spec):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ov_backend, ov_sel = open_best(folder, spec.artifacts, device="cpu")
        ort_backend, ort_sel = open_best(folder, spec.artifacts, backend="onnx", device="cpu")
    assert (ov_sel.placement.backend, ov_sel.placement.dtype) == ("openvino", "fp32")  # OpenVINO first on CPU
    assert ort_sel.info()["providers"] == ["CPUExecutionProvider"]
    inputs = batch(3, 12)
    np.testing.assert_allclose(masked(ov_backend.run(inputs), inputs), masked(ort_backend.run(inputs), inputs),
                               atol=1e-4)
    assert [d.name for d in available_devices()][-1] == "cpu"


def test_real_compile_failure_falls_back_to_onnxruntime_with_one_warning(folder, spec):
    placements = select_placements(spec.artifacts, device="auto", folder=folder)
    options = placements[0].options
    broken = replace(placements[0], options=replace(options, config={**options.config, "PERFORMANCE_HINT": "NOT_A_HINT"}))
    with pytest.warns(DeviceFallbackWarning) as record:
        backend, sel = open_with_fallback(folder, [broken] + placements[1:], explicit=False)
    assert len(record) == 1 and "NOT_A_HINT" in str(record[0].message)
    assert sel.placement.backend == "onnx" and sel.failed[0].placement == broken


def test_onnxruntime_dropping_cuda_silently_is_refused(folder, spec):
    cpu = next(p for p in select_placements(spec.artifacts, backend="onnx", device="cpu"))
    cuda = replace(cpu, device="cuda", options=OrtOptions(("CUDAExecutionProvider", "CPUExecutionProvider")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime's own "not in available providers"
        with pytest.raises(DeviceUnavailableError, match="did not enable CUDAExecutionProvider"):
            open_with_fallback(folder, [cuda], explicit=True)


def test_directml_session_options_reach_the_session(folder, spec):
    import onnxruntime as ort

    cpu = select_placements(spec.artifacts, backend="onnx", device="cpu")[0]
    dml_like = replace(cpu, options=OrtOptions(session_options={"enable_mem_pattern": False,
                                                                "execution_mode": "ORT_SEQUENTIAL"}))
    options = open_backend(folder, dml_like).session.get_session_options()
    assert options.enable_mem_pattern is False and options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


@pytest.mark.parametrize("model", ["tiny-cls", "minilm-mean"])
def test_static_shape_buckets_pad_split_and_cut_back(model, folder, spec, minilm_folders):
    """Per-token outputs (MiniLM, mean pooling) are cut back to the batch's length; a CLS-pooled ModernBERT's
    first-position output ([B, 1, H]) keeps its one position."""
    if model == "minilm-mean":
        folder = minilm_folders["hub"]
        spec = load_spec(folder)
    dynamic = select_placements(spec.artifacts, backend="openvino", device="cpu")[0]
    static = replace(dynamic, options=replace(dynamic.options, static_shapes=((1, 16), (2, 16), (4, 32), (2, 32))))
    reference, bucketed = open_backend(folder, dynamic), open_backend(folder, static)
    for rows, length in ((1, 9), (3, 20), (6, 32)):  # one row; 3 rows padded to (4, 32); 6 = 4 + 2 rows
        inputs = batch(rows, length, seed=rows)
        got = bucketed.run(inputs)
        positions = 1 if model == "tiny-cls" else length
        assert got.shape == reference.run(inputs).shape == (rows, positions, spec.hidden_size)
        np.testing.assert_allclose(masked(got, inputs), masked(reference.run(inputs), inputs), atol=1e-4)
    assert set(bucketed._by_shape) == {(1, 16), (4, 32), (2, 32)}  # compiled on first use only
    with pytest.raises(ValueError, match="largest static shape \\(32 tokens\\)"):
        bucketed.run(batch(1, 33))


def test_explicit_gpu_on_this_machine_raises_unless_fallback_is_allowed(folder):
    with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
        Embedder(folder, device="cuda")
    with pytest.warns(DeviceFallbackWarning, match="cuda"):
        emb = Embedder(folder, device="cuda", allow_fallback=True)
    assert emb.info["device"] == "cpu" and "cuda" in emb.info["fallbacks"][0]
    assert emb.encode(["hello"]).shape == (1, emb.dim)


def test_info_report_for_a_real_folder(folder):
    text = info_report(str(folder))
    rows = [line.split() for line in text.splitlines() if line.startswith("  cpu ")]
    assert ["cpu", "openvino", "fp32", "openvino/openvino_model.xml"] in [r[:4] for r in rows]
    assert ["cpu", "onnx", "fp32", "onnx/model.onnx"] in [r[:4] for r in rows]
    assert "device='auto' runs cpu (openvino, fp32, openvino/openvino_model.xml)" in text
    files = text.splitlines()[text.splitlines().index(f"model {folder} (embedder), model files:") + 1:][:2]
    assert sorted(f.split() for f in files) == [["onnx/model.onnx", "onnx", "fp32"],
                                                ["openvino/openvino_model.xml", "openvino", "fp32"]]
    assert max(len(line) for line in text.splitlines() if not line.startswith("  ")) < 200  # no dict on one line
    assert "cannot be read" in info_report(str(folder / "nope"))


def test_openvino_compiles_once_then_loads_the_cached_model(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("GRANITE_RT_CACHE", str(tmp_path / "cache"))
    first = Embedder(folder, backend="openvino", dtype="fp32")
    cache = first.info["cache_dir"]
    assert cache and cache.startswith(str(tmp_path / "cache" / "openvino"))
    assert list((tmp_path / "cache").rglob("*.blob"))
    texts = ["a cached model", "gives the same vectors as a compiled one"]
    second = Embedder(folder, backend="openvino", dtype="fp32")
    assert second.info["cache_dir"] == cache
    np.testing.assert_array_equal(first.encode(texts), second.encode(texts))


def test_onnxruntime_optimizes_the_graph_once_then_loads_it_optimized(folder, monkeypatch, tmp_path):
    import os
    import shutil

    import onnx

    monkeypatch.setenv("GRANITE_RT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    assert (model / "onnx" / "model.onnx_data").exists()   # the cached graph reads the model's own external weights
    texts = ["an optimized graph from the cache", "gives the same vectors as one optimized at load"]
    first = Embedder(model, backend="onnx", dtype="fp32")
    assert first.info["optimized_graph"] == "saved"
    cached = list((tmp_path / "cache" / "onnxruntime").rglob("*.onnx"))
    assert len(cached) == 1
    graph = onnx.load(str(cached[0]), load_external_data=False)   # the weights are not copied into the cache
    assert {entry.value for t in graph.graph.initializer for entry in t.external_data
            if entry.key == "location"} == {"model.onnx_data"}
    second = Embedder(model, backend="onnx", dtype="fp32")
    assert second.info["optimized_graph"] == "loaded"
    expected = first.encode(texts)
    np.testing.assert_array_equal(second.encode(texts), expected)

    cached[0].write_bytes(b"not an onnx graph")             # damaged: optimized again, and the file replaced
    third = Embedder(model, backend="onnx", dtype="fp32")
    assert third.info["optimized_graph"] == "saved"
    np.testing.assert_array_equal(third.encode(texts), expected)
    assert Embedder(model, backend="onnx", dtype="fp32").info["optimized_graph"] == "loaded"

    weights = model / "onnx" / "model.onnx_data"            # a changed model file gets a graph of its own
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert Embedder(model, backend="onnx", dtype="fp32").info["optimized_graph"] == "saved"
    assert len(list((tmp_path / "cache" / "onnxruntime").rglob("*.onnx"))) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_unwritable_or_disabled_cache_still_loads(folder, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GRANITE_RT_CACHE", str(blocker / "cache"))  # cannot be created under a file
    assert Embedder(folder, backend="openvino", dtype="fp32").info["cache_dir"] is None
    assert Embedder(folder, backend="onnx", dtype="fp32").info["optimized_graph"] == "off"
    monkeypatch.setenv("GRANITE_RT_CACHE", "off")
    assert Embedder(folder, backend="openvino", dtype="fp32").info["cache_dir"] is None
    assert Embedder(folder, backend="onnx", dtype="fp32").info["optimized_graph"] == "off"


def test_throughput_workload_keeps_openvino_streams_busy_with_the_same_results(folder):
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(70)]  # several batches
    latency = Embedder(folder, backend="openvino", dtype="fp32")
    bulk = Embedder(folder, backend="openvino", dtype="fp32", workload="throughput")
    assert (latency.info["performance_hint"], latency.info["parallel_requests"]) == ("LATENCY", 1)
    assert bulk.info["performance_hint"] == "THROUGHPUT" and bulk.info["workload"] == "throughput"
    compiled = bulk._model.backend.compiled
    assert bulk.info["parallel_requests"] == int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) >= 1
    np.testing.assert_allclose(bulk.encode(texts, batch_size=8), latency.encode(texts, batch_size=8), atol=1e-5)
    with pytest.raises(ValueError, match="workload"):
        Embedder(folder, workload="bulk")


def test_throughput_workload_runs_onnxruntime_batches_side_by_side_with_the_same_bits(folder):
    """workload="throughput" on onnxruntime: one thread per run and as many runs at once as threads, each batch's
    rows bitwise those of the threaded session (a call of several rows is split across the runs)."""
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(70)]
    latency = Embedder(folder, backend="onnx", dtype="fp32", threads=2)
    bulk = Embedder(folder, backend="onnx", dtype="fp32", threads=2, workload="throughput")
    assert latency.info["parallel_requests"] == 1 and bulk.info["parallel_requests"] == 2
    assert latency._model.backend.session.get_session_options().intra_op_num_threads == 2
    assert bulk._model.backend.session.get_session_options().intra_op_num_threads == 1
    # runs in flight at once plan no memory pattern each (peak RSS); one run at a time keeps it
    assert not bulk._model.backend.session.get_session_options().enable_mem_pattern
    assert latency._model.backend.session.get_session_options().enable_mem_pattern
    seen = []
    run = bulk._model.backend.run
    bulk._model.backend.run = lambda batch: seen.append(threading.current_thread().name) or run(batch)
    np.testing.assert_array_equal(bulk.encode(texts, batch_size=8), latency.encode(texts, batch_size=8))
    assert len(seen) > 1 and all(name.startswith("granite-rt") for name in seen)  # on the pool's threads
    assert Embedder(folder, backend="onnx", dtype="fp32", threads=1, workload="throughput").info["parallel_requests"] == 1


def test_a_latency_load_runs_a_call_of_several_batches_side_by_side_with_the_same_bits(folder):
    """workload="latency" on onnxruntime: a call that forms one batch runs on every thread; a call of several runs
    them on a one-thread sibling session, side by side, opened on the first such call; the same bits either way."""
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(70)]
    model = Embedder(folder, backend="onnx", dtype="fp32", threads=2)
    backend = model._model.backend
    assert model.info["side_by_side"] == backend.side_by_side.workers == 2 and backend._sibling is None
    query = model.encode(["one query"])
    assert backend._sibling is None                                   # one batch: the threaded session alone
    together = model.encode(texts, batch_size=8)
    assert backend._sibling.session.get_session_options().intra_op_num_threads == 1
    assert backend._sibling.parallel_requests == 2
    assert not backend._sibling.session.get_session_options().enable_mem_pattern   # runs in flight: no pattern each
    seen, sibling_run = set(), backend._sibling.run
    backend._sibling.run = lambda batch: seen.add(threading.current_thread()) or sibling_run(batch)
    for _ in range(3):
        model.encode(texts, batch_size=8)
    assert 1 <= len(seen) <= 2 and threading.current_thread() not in seen   # the model's own threads, every call
    in_turn = Embedder(folder, backend="onnx", dtype="fp32", threads=2)
    in_turn._model.backend.side_by_side = None                        # one batch after another on both threads
    np.testing.assert_array_equal(together, in_turn.encode(texts, batch_size=8))
    np.testing.assert_array_equal(query, in_turn.encode(["one query"]))
    assert Embedder(folder, backend="onnx", dtype="fp32", threads=1).info["side_by_side"] == 0
    assert Embedder(folder, backend="onnx", dtype="fp32", threads=2, workload="throughput").info["side_by_side"] == 0
    assert Embedder(folder, backend="openvino", dtype="fp32", threads=2).info["side_by_side"] == 0
