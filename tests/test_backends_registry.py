"""A new backend is one module and one ``register`` call: a pure-numpy toy backend, registered from this
test module alone, runs an Embedder through backend/device selection, the fallback chain and ``info``.

(``vnni_cpu``: the registry's order holds on the CPU; without int8 dot products onnxruntime goes first.)
The toy "model" is an embedding-table lookup (last_hidden_state = table[input_ids]); with the tiny
embedder's CLS pooling and Normalize its vector for a text is the normalised table row of the text's
first token, which the assertions compute by hand.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest

from granite_rt import Embedder, backends, devices
from granite_rt.backends.base import BackendType, EngineInventory, Placement
from granite_rt.devices import DeviceFallbackWarning
from granite_rt.errors import BackendUnavailableError
from granite_rt.report import info_report

TEXTS = ["What is the chemical formula of water?", "Water is H2O.", "boundary layer flow"]


class TableLookup:
    """The compiled toy model: a (vocab, hidden) table read once."""

    parallel_requests = 1
    input_names = ("input_ids", "attention_mask")

    def __init__(self, folder: Path, placement: Placement) -> None:
        self.placement = placement
        self.table = np.load(folder / placement.artifact.path)

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.table[inputs["input_ids"]]

    def describe(self) -> dict[str, Any]:
        return {"backend": "numpy", "device": self.placement.device, "dtype": self.placement.dtype,
                "file": self.placement.artifact.path, "rows": int(self.table.shape[0])}


class NumpyBackend(BackendType):
    name = "numpy"
    engine = "numpy"
    install = "pip install numpy"
    devices = {"cpu": "host"}
    runnable = {("cpu", "fp32"): ("fp32",)}
    file_names = {"fp32": "numpy/table.npy"}
    fail_open = False

    def probe(self, full: bool = False) -> EngineInventory:
        return EngineInventory(np.__version__, ("host",))

    def open(self, folder: Path, placement: Placement, threads: int) -> TableLookup:
        if self.fail_open:
            raise RuntimeError("the toy engine refused to start")
        return TableLookup(folder, placement)


@pytest.fixture
def toy():
    backend = NumpyBackend()
    backends.register(backend, first=True)
    yield backend
    backends.unregister(backend.name)


@pytest.fixture(scope="module")
def folder(tiny_embedder_folders, tmp_path_factory) -> Path:
    """The tiny embedder (IBM layout: ONNX and OpenVINO fp32) plus the toy backend's table."""
    out = Path(shutil.copytree(tiny_embedder_folders["hub"], tmp_path_factory.mktemp("toy") / "model"))
    config = json.loads((out / "config.json").read_text())
    rng = np.random.default_rng(0)
    (out / "numpy").mkdir()
    np.save(out / "numpy" / "table.npy", rng.standard_normal((config["vocab_size"], config["hidden_size"]),
                                                             dtype=np.float32))
    return out


def expected(emb: Embedder, folder: Path) -> np.ndarray:
    table = np.load(folder / "numpy" / "table.npy")
    first = np.array([enc.ids[0] for enc in emb.tokenizer.encode(TEXTS)])
    rows = table[first]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_toy_backend_runs_by_name(toy, folder):
    emb = Embedder(folder, backend="numpy")
    assert (emb.info["backend"], emb.info["device"], emb.info["file"]) == ("numpy", "cpu", "numpy/table.npy")
    assert emb.info["rows"] > 0 and emb.info["files"] == ["numpy/table.npy"]
    assert emb.spec.pooling == ("cls",) and emb.spec.normalize
    np.testing.assert_allclose(emb.encode(TEXTS), expected(emb, folder), atol=1e-6)


def test_auto_prefers_the_backend_registered_first_and_says_why(toy, folder, vnni_cpu):
    emb = Embedder(folder)  # backend, device, dtype: auto
    assert emb.info["backend"] == "numpy"
    assert "no int8 artifact for numpy, so fp32" in emb.info["why"]
    assert [d.backend for d in devices.available_devices()][0] == "numpy"


def test_a_failing_toy_engine_falls_back_to_the_next_backend(toy, folder, vnni_cpu):
    toy.fail_open = True
    with pytest.warns(DeviceFallbackWarning, match="toy engine refused"):
        emb = Embedder(folder)
    assert emb.info["backend"] in ("openvino", "onnx") and emb.info["device"] == "cpu"
    assert "numpy" in emb.info["fallbacks"][0] and "refused" in emb.info["fallbacks"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeviceFallbackWarning)
        reference = Embedder(folder, backend="onnx", dtype="fp32").encode(TEXTS)
    np.testing.assert_allclose(emb.encode(TEXTS), reference, atol=1e-4)


def test_info_lists_the_toy_engine_its_device_and_what_it_would_run(toy, folder, vnni_cpu):
    text = info_report(str(folder))
    assert "numpy " + np.__version__ in text
    assert any(line.split()[:3] == ["cpu", "numpy", "host"] and line.endswith("available") for line in text.splitlines())
    assert "device='auto' runs cpu (numpy, fp32, numpy/table.npy)" in text


def test_an_unregistered_backend_is_named_among_the_registered_ones(folder):
    with pytest.raises(ValueError, match="backend='numpy' is not one of 'auto', 'openvino', 'onnx'"):
        Embedder(folder, backend="numpy")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'numpy'; registered: openvino, onnx"):
        backends.get("numpy")
