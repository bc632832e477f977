"""granite_rt.int8_recipe's down-projection split and SmoothQuant: exact in fp32 on every exported architecture
(ModernBERT's GLU, BERT's bias + GELU), the split only where the FFN has the shape it understands, its outlier
channels kept fp32, and SmoothQuant off the split down-projections."""

from __future__ import annotations

import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from granite_rt.batching import pad_batch  # noqa: E402
from granite_rt import int8_recipe  # noqa: E402
from granite_rt.int8_recipe import (DOWN_PROJECTIONS, OUTLIER_CHANNELS, OUTLIER_SUFFIX, _quantizable_matmuls,  # noqa: E402
                                    calibration_feeds, channel_maxima, down_projection_inputs, graph_inputs,
                                    load_calibration, smooth_quant, smoothed_inputs, split_down_projections)
from granite_rt.model_folder import load_spec  # noqa: E402
from granite_rt.onnx_graph import save_onnx  # noqa: E402
from granite_rt.tokenize import Tokenizer  # noqa: E402


def _downs(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and re.search(DOWN_PROJECTIONS, n.name)]


@pytest.mark.parametrize("folders", ["tiny_embedder_folders", "tiny_reranker_folders", "minilm_folders"])
def test_the_split_graph_computes_what_the_fp32_graph_computes(folders, request, tmp_path):
    folder = request.getfixturevalue(folders)["export"]
    source = folder / "onnx" / "model.onnx"
    inputs = graph_inputs(source)
    feeds = calibration_feeds(load_calibration(None, str(folder), 0), folder, inputs, 8)
    model = onnx.load(str(source))
    layers = _downs(model)
    downs, outliers = split_down_projections(model, feeds, tmp_path)
    assert downs == layers and layers
    weights = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    moved = 0
    for down in downs:
        int8_rows, fp32_rows = (list(weights[nodes[name].input[1]].dims) for name in (down, down + OUTLIER_SUFFIX))
        channels = int8_rows[0] + fp32_rows[0]
        assert fp32_rows[0] == int(np.ceil(OUTLIER_CHANNELS * channels)) and int8_rows[1] == fp32_rows[1]
        moved += fp32_rows[0]
    assert outliers == moved
    split = save_onnx(model, tmp_path / "split.onnx")
    before = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(split), providers=["CPUExecutionProvider"])
    spec = load_spec(folder)
    tokenizer = Tokenizer.for_spec(folder, spec)
    texts = ["a short one", "Water boils at 100 degrees Celsius at sea level; at altitude it boils lower. " * 4]
    encodings = tokenizer.encode(texts) if spec.kind == "embedder" else tokenizer.encode_pairs([(t, t) for t in texts])
    padded = {name: value for name, value in pad_batch(encodings, tokenizer.pad_id).items() if name in inputs}
    for feed in [*feeds[:3], padded]:
        expected, got = before.run(None, feed)[0], after.run(None, feed)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # SmoothQuant (the OpenVINO recipe) on top: the same function again, the down-projections' INT8 channels untouched
    onnx.load_external_data_for_model(model, str(tmp_path))   # save_onnx left the weights in split.onnx_data
    smoothed = smooth_quant(model, feeds, tmp_path, skip=downs)
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert smoothed >= 2 * len(downs)      # at least the attention input and the up-projection of every layer
    for down in downs:
        assert "smooth_quant" not in producer[nodes[down].input[0]].name
        assert "smooth_quant" not in producer[nodes[down + OUTLIER_SUFFIX].input[0]].name
    del before, after
    smooth = ort.InferenceSession(str(save_onnx(model, tmp_path / "smoothed.onnx")), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    for feed in [*feeds[:3], padded]:
        np.testing.assert_allclose(smooth.run(None, feed)[0], reference.run(None, feed)[0], rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize("folders", ["tiny_embedder_folders", "minilm_folders"])
def test_one_calibration_pass_splits_and_smooths_as_two_passes_do(folders, request, tmp_path):
    """The OpenVINO recipe calibrates the split and SmoothQuant in one pass on the graph before the split: the
    split leaves SmoothQuant's inputs as they are, so the graph it writes is the two-pass one."""
    folder = request.getfixturevalue(folders)["export"]
    source = folder / "onnx" / "model.onnx"
    feeds = calibration_feeds(load_calibration(None, str(folder), 0), folder, graph_inputs(source), 8)
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    two = onnx.load(str(source))
    downs = _downs(two)
    before_split = set(smoothed_inputs(two, skip=downs))
    split_down_projections(two, feeds, tmp_path / "two")
    assert set(smoothed_inputs(two, skip=downs)) == before_split and before_split
    smooth_quant(two, feeds, tmp_path / "two", skip=downs)
    one = onnx.load(str(source))
    maxima = channel_maxima(one, [*down_projection_inputs(one), *smoothed_inputs(one, skip=downs)], feeds, tmp_path / "one")
    assert set(down_projection_inputs(one)) | before_split == set(maxima)
    split_down_projections(one, feeds, tmp_path / "one", maxima=maxima)
    smooth_quant(one, feeds, tmp_path / "one", skip=downs, maxima=maxima)
    assert [(n.name, n.op_type, list(n.input)) for n in one.graph.node] == \
        [(n.name, n.op_type, list(n.input)) for n in two.graph.node]
    weights = {i.name: numpy_helper.to_array(i) for i in two.graph.initializer}
    assert {i.name for i in one.graph.initializer} == set(weights)
    for init in one.graph.initializer:
        np.testing.assert_allclose(numpy_helper.to_array(init), weights[init.name], rtol=1e-4, atol=1e-6, err_msg=init.name)


def test_the_openvino_recipe_calibrates_in_one_fp32_pass(tiny_embedder_folders, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    folder = tiny_embedder_folders["export"]
    source = folder / "onnx" / "model.onnx"
    calibration = load_calibration(None, str(folder), 0)
    feeds = calibration_feeds(calibration, folder, graph_inputs(source), 8)
    passes = []
    real = int8_recipe.channel_maxima

    def counted(model, tensors, *args):
        passes.append(list(tensors))
        return real(model, tensors, *args)

    monkeypatch.setattr(int8_recipe, "channel_maxima", counted)
    recipe = int8_recipe.quantize_openvino(source, tmp_path / "model_int8.xml", feeds, calibration)
    assert recipe["down_projections"].startswith(f"{len(_downs(onnx.load(str(source))))} split")
    assert recipe["smooth_quant"].startswith("granite-rt")
    assert len(passes) == 1, passes

def _ffn_graph(*, fused_up: bool = False, leak: bool = False, channels: int = 200, hidden: int = 8):
    """x → up-projection (two MatMuls, or one of twice the width + Split) → SiLU(a) · g (+ bias) → down-projection."""
    rng = np.random.default_rng(0)
    weight = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    inits = [weight("wo", channels, hidden), weight("bias", channels)]
    if fused_up:
        inits.append(weight("wi", hidden, 2 * channels))
        nodes = [helper.make_node("MatMul", ["x", "wi"], ["ag"], name="/mlp/Wi/MatMul"),
                 helper.make_node("Split", ["ag"], ["a", "g"], axis=-1, num_outputs=2, name="/mlp/split")]
    else:
        inits += [weight("wa", hidden, channels), weight("wg", hidden, channels)]
        nodes = [helper.make_node("MatMul", ["x", "wa"], ["a"], name="/mlp/MatMul"),
                 helper.make_node("MatMul", ["x", "wg"], ["g"], name="/mlp/MatMul_1")]
    nodes += [helper.make_node("Sigmoid", ["a"], ["sig"], name="/mlp/act/Sigmoid"),
              helper.make_node("Mul", ["a", "sig"], ["act"], name="/mlp/act/Mul"),
              helper.make_node("Mul", ["act", "g"], ["m"], name="/mlp/Mul"),
              helper.make_node("Add", ["m", "bias"], ["mb"], name="/mlp/Add"),
              helper.make_node("MatMul", ["mb", "wo"], ["y"], name="/layers.0/mlp/Wo/MatMul")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if leak:  # the gated activation is used outside the FFN too
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, hidden])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_only_an_ffn_of_the_understood_shape_is_split_and_its_outlier_nodes_stay_fp32(tmp_path):
    feeds = [{"x": np.random.default_rng(i).standard_normal((5, 8)).astype(np.float32)} for i in range(4)]
    for unusual in (_ffn_graph(fused_up=True), _ffn_graph(leak=True)):
        count = len(unusual.graph.node)
        assert split_down_projections(unusual, feeds, tmp_path) == ([], 0)
        assert len(unusual.graph.node) == count
    model = _ffn_graph()
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    downs, outliers = split_down_projections(model, feeds, tmp_path)
    assert downs == ["/layers.0/mlp/Wo/MatMul"] and outliers == 2            # 1 % of 200 channels
    quantized, kept = _quantizable_matmuls(model, downs)
    assert set(quantized) == {"/mlp/MatMul", "/mlp/MatMul_1", "/layers.0/mlp/Wo/MatMul"}
    assert set(kept) == {"/mlp/MatMul" + OUTLIER_SUFFIX, "/mlp/MatMul_1" + OUTLIER_SUFFIX,
                         "/layers.0/mlp/Wo/MatMul" + OUTLIER_SUFFIX}
    # the two channels that reached the largest |x| are the ones moved: their bias entries went with them
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in feeds:
        np.testing.assert_allclose(session.run(None, feed)[0], reference.run(None, feed)[0], rtol=1e-4, atol=1e-4)
    probe = _ffn_graph()
    probe.graph.output.append(helper.make_tensor_value_info("mb", TensorProto.FLOAT, None))
    peaks = np.max([np.abs(ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
                           .run(["mb"], f)[0]).max(axis=0) for f in feeds], axis=0)
    moved = np.sort(np.argsort(-peaks)[:2])
    bias = numpy_helper.to_array(next(i for i in probe.graph.initializer if i.name == "bias"))
    split_bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "bias" + OUTLIER_SUFFIX))
    np.testing.assert_array_equal(split_bias, bias[moved])
    without = _quantizable_matmuls(_ffn_graph())   # unsplit: the down-projection stays fp32 whole
    assert without == (["/mlp/MatMul", "/mlp/MatMul_1"], ["/layers.0/mlp/Wo/MatMul"])


def test_smooth_quant_flattens_the_shared_input_of_the_up_projections_and_skips_what_it_is_told(tmp_path):
    feeds = [{"x": (np.random.default_rng(i).standard_normal((5, 8)) * np.r_[40.0, np.ones(7)]).astype(np.float32)}
             for i in range(4)]                                       # channel 0 an outlier, 40x the others
    model = _ffn_graph()
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert smooth_quant(model, feeds, tmp_path, skip=["/layers.0/mlp/Wo/MatMul"]) == 1   # x, read by both ups
    muls = [n for n in model.graph.node if n.op_type == "Mul" and "smooth_quant" in n.name]
    assert len(muls) == 1 and muls[0].input[0] == "x"
    readers = sorted(n.name for n in model.graph.node if muls[0].output[0] in n.input)
    assert readers == ["/mlp/MatMul", "/mlp/MatMul_1"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(muls[0].output[0], TensorProto.FLOAT, None))
    peaks = np.max([np.abs(ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
                           .run([muls[0].output[0]], f)[0]).max(axis=0) for f in feeds], axis=0)
    before = np.max([np.abs(f["x"]).max(axis=0) for f in feeds], axis=0)
    assert peaks.max() / peaks.min() < before.max() / before.min() / 5          # the outlier moved into the weights
    for feed in feeds:
        np.testing.assert_allclose(session.run(None, feed)[0], reference.run(None, feed)[0], rtol=1e-4, atol=1e-3)
    untouched = _ffn_graph()
    assert smooth_quant(untouched, feeds, tmp_path, skip=["/mlp/MatMul", "/mlp/MatMul_1", "/layers.0/mlp/Wo/MatMul"]) == 0


def _two_ffns():
    """token embeddings x → FFN of layer 0 (the understood shape) → h → FFN of layer 1, whose gated activation is
    also an output."""
    rng = np.random.default_rng(1)
    weight = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["x"], name="/embeddings/Gather")]
    inits = [weight("table", 50, 8)]
    for layer, (source, out) in enumerate((("x", "h"), ("h", "y"))):
        p = f"/layers.{layer}/mlp"
        inits += [weight(f"wa{layer}", 8, 200), weight(f"wg{layer}", 8, 200), weight(f"wo{layer}", 200, 8)]
        nodes += [helper.make_node("MatMul", [source, f"wa{layer}"], [f"a{layer}"], name=f"{p}/MatMul"),
                  helper.make_node("MatMul", [source, f"wg{layer}"], [f"g{layer}"], name=f"{p}/MatMul_1"),
                  helper.make_node("Sigmoid", [f"a{layer}"], [f"s{layer}"], name=f"{p}/act/Sigmoid"),
                  helper.make_node("Mul", [f"a{layer}", f"s{layer}"], [f"t{layer}"], name=f"{p}/act/Mul"),
                  helper.make_node("Mul", [f"t{layer}", f"g{layer}"], [f"m{layer}"], name=f"{p}/Mul"),
                  helper.make_node("MatMul", [f"m{layer}", f"wo{layer}"], [f"o{layer}"], name=f"{p}/Wo/MatMul"),
                  helper.make_node("Add", [source, f"o{layer}"], [out], name=f"/layers.{layer}/residual")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "m1")]
    graph = helper.make_graph(nodes, "ffns", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_openvino_recipe_keeps_a_down_projection_it_cannot_split_fp32(tmp_path):
    """Layer 0 is split (its INT8 channels quantised), layer 1 (its activation used elsewhere) is not: NNCF must
    leave that whole down-projection fp32, as the onnxruntime recipe does, and SmoothQuant must not touch it."""
    pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from granite_rt.int8_recipe import Calibration, quantize_openvino

    source = save_onnx(_two_ffns(), tmp_path / "ffns.onnx")
    feeds = [{"input_ids": np.random.default_rng(i).integers(0, 50, 6)} for i in range(8)]
    record = quantize_openvino(source, tmp_path / "ffns.xml", feeds, Calibration([], "test"))
    assert record["down_projections"].startswith("1 split by input channel") and "1 of another shape fp32" in record["down_projections"]
    model = ov.Core().read_model(str(tmp_path / "ffns.xml"))
    ops = {op.get_friendly_name(): op for op in model.get_ops()}

    def quantized(name: str) -> bool:   # NNCF put a FakeQuantize on its activation input
        return any(value.get_node().get_type_name() == "FakeQuantize" for value in ops[name].input_values())

    assert quantized("/layers.0/mlp/Wo/MatMul") and quantized("/layers.0/mlp/MatMul")
    assert not quantized("/layers.1/mlp/Wo/MatMul") and not quantized("/layers.0/mlp/Wo/MatMul" + OUTLIER_SUFFIX)
    smoothed = [op.input_value(0).get_node().get_friendly_name() for name, op in ops.items() if name.endswith("Wo/MatMul")]
    assert not any("smooth_quant" in n for n in smoothed), smoothed
