"""The export computes the traced graph's shape arithmetic once per forward pass (granite_export/shapes.py).

These fail if the rewrite stops applying (the per-layer ``Shape`` chains come back), if it changes any
output bit, or if it shares a shape that is not just the inputs' axes and constants.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from granite_export import onnx_export  # noqa: E402
from granite_export.shapes import share_shape_arithmetic  # noqa: E402

# (rows, tokens): one token, shorter than the tiny models' sliding window, past it, past the span of 3 windows
SHAPES = [(1, 1), (1, 7), (2, 40), (3, 150)]


def _run(path, feed) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _feeds(inputs: list[str]):
    rng = np.random.default_rng(7)
    for rows, tokens in SHAPES:
        mask = np.ones((rows, tokens), np.int64)
        mask[-1, max(1, tokens // 2):] = 0  # the last row padded
        feed = {"input_ids": rng.integers(5, 200, (rows, tokens)).astype(np.int64), "attention_mask": mask,
                "token_type_ids": np.zeros((rows, tokens), np.int64)}
        yield {name: feed[name] for name in inputs}


@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_traced_graph_shares_its_shapes_and_computes_the_same_bits(kind, tiny_embedder_checkpoint,
                                                                  tiny_reranker_checkpoint, tmp_path, monkeypatch):
    from granite_export import checkpoint as ckpt

    source = {"embedder": tiny_embedder_checkpoint, "reranker": tiny_reranker_checkpoint}[kind]
    checkpoint = ckpt.inspect(str(source), kind)
    model = ckpt.load_model(checkpoint)
    output = "last_hidden_state" if kind == "embedder" else "logits"
    monkeypatch.setattr(onnx_export, "share_shape_arithmetic", lambda graph: 0)  # the graph as traced
    traced = onnx_export.export_onnx(model, tmp_path / "model.onnx", ["input_ids", "attention_mask"], output)
    graph = onnx.load(str(traced), load_external_data=False)
    before = [n.op_type for n in graph.graph.node]
    assert share_shape_arithmetic(graph) > 0
    after = [n.op_type for n in graph.graph.node]
    onnx.save(graph, str(tmp_path / "shared.onnx"))  # beside model.onnx_data, which it reads
    # one Shape of the input instead of one per use, and the chains that read them gone with them
    assert after.count("Shape") == 1 < before.count("Shape")
    assert len(after) < len(before) - 2 * before.count("Shape")
    # every constant the rewrite added is read (onnxruntime warns of each unused initializer at load)
    read = {name for node in graph.graph.node for name in node.input}
    added = [i.name for i in graph.graph.initializer if i.name.startswith("shared_shape/")]
    assert added and set(added) <= read, sorted(set(added) - read)
    for feed in _feeds(["input_ids", "attention_mask"]):
        np.testing.assert_array_equal(_run(tmp_path / "shared.onnx", feed), _run(traced, feed))


def test_exported_graph_has_one_shape_per_forward(tiny_embedder_folders, tiny_reranker_folders):
    for folders in (tiny_embedder_folders, tiny_reranker_folders):
        graph = onnx.load(str(folders["export"] / "onnx" / "model.onnx"), load_external_data=False).graph
        shapes = [n for n in graph.node if n.op_type == "Shape"]
        assert [n.input[0] for n in shapes] == ["input_ids"], [n.name for n in shapes]


def test_a_shape_that_is_not_the_inputs_axes_keeps_its_own_ops(tmp_path):
    """[batch, min(5, sequence)] (a slice of the input) must not be taken for [batch, sequence]."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, values):
        return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)

    nodes = [
        helper.make_node("Slice", ["x", "zero", "five", "one"], ["head"]),          # [batch, min(5, sequence)]
        helper.make_node("Shape", ["head"], ["head_shape"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "zero"], ["rows"]),                  # [batch]
        helper.make_node("Gather", ["x_shape", "one"], ["tokens"]),                 # [sequence]
        helper.make_node("Concat", ["tokens", "rows"], ["swapped"], axis=0),        # [sequence, batch]
        helper.make_node("Expand", ["unit", "head_shape"], ["head_ones"]),
        helper.make_node("Expand", ["unit", "swapped"], ["swapped_ones"]),
    ]
    graph = helper.make_graph(
        nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
        [helper.make_tensor_value_info("head_ones", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("swapped_ones", TensorProto.FLOAT, None)],
        [const("zero", [0]), const("one", [1]), const("five", [5]),
         numpy_helper.from_array(np.ones((), np.float32), "unit")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert share_shape_arithmetic(model) == 4  # x_shape, rows, tokens, swapped; not head_shape
    onnx.save(model, str(tmp_path / "shared.onnx"))
    assert "head_shape" in {o for n in model.graph.node for o in n.output}
    session = ort.InferenceSession(str(tmp_path / "shared.onnx"), providers=["CPUExecutionProvider"])
    for tokens in (3, 8):
        head, swapped = session.run(None, {"x": np.zeros((2, tokens), np.float32)})
        assert head.shape == (2, min(5, tokens)) and swapped.shape == (tokens, 2)


def test_a_graph_it_cannot_infer_is_left_as_traced_and_nothing_is_written(tmp_path, monkeypatch):
    """onnxruntime's inference saves a model into the working directory when it gives up: not into the user's."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Opaque", ["x"], ["y"], domain="example.unknown"), helper.make_node("Shape", ["y"], ["s"])],
        "unknown", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("example.unknown", 1)])
    before = model.SerializeToString()
    monkeypatch.chdir(tmp_path)
    assert share_shape_arithmetic(model) == 0
    assert model.SerializeToString() == before
    assert list(tmp_path.iterdir()) == []
