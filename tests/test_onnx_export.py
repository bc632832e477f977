"""ONNX files written by the export stage keep their weights in page-aligned external data, which onnxruntime
memory-maps: a weight is resident once and only where it is read (most of a token-embedding table never is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from granite_export.onnx_export import EXTERNAL_DATA_ALIGNMENT, save_onnx  # noqa: E402

ROWS, DIM = 200_000, 128  # a 100 MB fp32 table, about the 97m model's int8 one scaled up

# VmHWM (bench.machine.peak_rss_mib), not ru_maxrss, which keeps the forking parent's peak across exec.
_PEAK_GROWTH = """
import json, sys
import numpy as np, onnxruntime as ort
from bench.machine import peak_rss_mib
before = peak_rss_mib()
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = session.run(None, {"input_ids": np.array([[1, 5, 99_999]], dtype=np.int64)})[0]
print(json.dumps({"grown_mib": peak_rss_mib() - before, "row": out[0, 2].tolist()}))
"""


def _table_model(table: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["embeddings"])], "table",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "sequence", DIM])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.ones(8, np.float32), "small")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _peak_growth(path) -> dict:
    done = subprocess.run([sys.executable, "-c", _PEAK_GROWTH, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_external_data_is_aligned_and_round_trips(tmp_path):
    table = np.random.default_rng(0).standard_normal((ROWS, DIM), dtype=np.float32)
    save_onnx(_table_model(table), tmp_path / "model.onnx")
    stored = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    fields = {t.name: {e.key: e.value for e in t.external_data} for t in stored.graph.initializer}
    assert fields["small"] == {}  # tiny tensors stay inline
    assert fields["table"]["location"] == "model.onnx_data"
    assert int(fields["table"]["offset"]) % EXTERNAL_DATA_ALIGNMENT == 0
    loaded = onnx.numpy_helper.to_array(onnx.load(str(tmp_path / "model.onnx")).graph.initializer[0])
    np.testing.assert_array_equal(loaded, table)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_onnxruntime_maps_the_weights_instead_of_copying_them(tmp_path):
    """Peak RSS of loading + one lookup: far below the table's size when mapped, above it when copied."""
    table = np.random.default_rng(0).standard_normal((ROWS, DIM), dtype=np.float32)
    (tmp_path / "mapped").mkdir()
    save_onnx(_table_model(table), tmp_path / "mapped" / "model.onnx")
    onnx.save(_table_model(table), str(tmp_path / "inline.onnx"))  # the single-file form, for contrast

    mapped, inline = _peak_growth(tmp_path / "mapped" / "model.onnx"), _peak_growth(tmp_path / "inline.onnx")
    size_mib = table.nbytes / 2**20
    assert mapped["row"] == inline["row"] == table[99_999].tolist()
    assert inline["grown_mib"] > size_mib, inline  # the control: a copied table is resident in full
    assert mapped["grown_mib"] < size_mib / 4, mapped
