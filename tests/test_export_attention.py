"""Issue 7: the exported ModernBERT graph embeds long inputs in memory linear in their length.

Global-attention layers are one ``com.microsoft.MultiHeadAttention`` node each (onnxruntime's CPU flash
kernel; OpenVINO's ScaledDotProductAttention), sliding-window layers are computed in blocks
(granite_export/attention.py). These tests fail if the export falls back to a graph that materialises
``heads × S²`` attention scores, and check that the rewritten attention still equals eager attention.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

# The tiny embedder: 4 layers (global, sliding, sliding, global), 4 heads of 16, sliding window ±8. CLS pooling:
# the last layer attends for the first position alone (export/first_position.py), one row of scores in plain
# ops, so one global layer is a MultiHeadAttention node.
GLOBAL_LAYERS = 1
LONG = 8192          # tokens in the memory check: one eager score tensor would be 4 × 8192² × 4 B = 1 GiB
EXTRA_MIB = 320      # allowed growth over the loaded model (measured: onnxruntime +31 MiB, OpenVINO +84 MiB)


def _ids(batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 1000, (batch, length)).astype(np.int64)


def test_global_layers_are_multihead_attention_nodes(tiny_embedder_folders):
    graph = onnx.load(str(tiny_embedder_folders["export"] / "onnx" / "model.onnx"), load_external_data=False)
    mha = [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == GLOBAL_LAYERS
    assert {n.domain for n in mha} == {"com.microsoft"}
    # No mask or bias input: onnxruntime's CPU kernel takes its flash path only without them.
    assert all(len([i for i in n.input if i]) == 3 for n in mha)


def test_openvino_converts_them_to_scaled_dot_product_attention(tiny_embedder_folders):
    import openvino as ov

    model = ov.Core().read_model(str(tiny_embedder_folders["hub"] / "openvino" / "openvino_model.xml"))
    # Its frontend also recognises the last layer's one-query attention (MatMul, Softmax, MatMul) as one.
    assert sum(op.get_type_name() == "ScaledDotProductAttention" for op in model.get_ops()) == GLOBAL_LAYERS + 1


def test_no_intermediate_tensor_grows_with_the_square_of_the_length(tiny_embedder_folders):
    """Every value the graph computes (outside the attention kernels) stays below S² elements at S = 512."""
    import onnxruntime as ort
    from onnx import helper

    graph = onnx.load(str(tiny_embedder_folders["export"] / "onnx" / "model.onnx"))
    names = {o.name for o in graph.graph.output}
    for node in graph.graph.node:
        for out in node.output:
            if out and out not in names:
                graph.graph.output.append(helper.ValueInfoProto(name=out))
                names.add(out)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    length = 512
    ids = _ids(1, length)
    values = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    size, name = max((np.asarray(v).size, o.name) for v, o in zip(values, session.get_outputs()))
    assert size < length * length, f"{name} has {size} elements (S² = {length * length})"


@pytest.mark.parametrize("lengths", [[300, 129, 40, 7], [64, 63, 65, 1], [20, 9, 16], [7, 3], [1]])
def test_blocked_attention_equals_eager_attention(tiny_embedder_checkpoint, tiny_embedder_folders, lengths):
    """Padded rows, lengths across block boundaries, shorter than a block or a key span (smaller blocks) and beyond
    max_position_embeddings: both backends = eager torch at the position CLS pooling reads."""
    import onnxruntime as ort
    import openvino as ov
    import torch
    from transformers import AutoModel

    batch = len(lengths)
    ids = _ids(batch, max(lengths), seed=1)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    model = AutoModel.from_pretrained(tiny_embedder_checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    onnx_path = tiny_embedder_folders["export"] / "onnx" / "model.onnx"
    feed = {"input_ids": ids, "attention_mask": mask}
    got_ort = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    compiled = ov.Core().compile_model(str(tiny_embedder_folders["hub"] / "openvino" / "openvino_model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got_ov = compiled(feed)[0]
    for got in (got_ort, got_ov):
        # The graph returns the first position (CLS pooling, export/first_position.py); its global layers mix
        # every position into it, so a wrong blocked sliding window anywhere in the row shows here.
        assert got.shape == (batch, 1, 64) and np.isfinite(got).all()
        np.testing.assert_allclose(got[:, 0], want[:, 0], atol=2e-5, rtol=0)


def test_torch_side_of_the_blocked_attention_equals_eager(tiny_embedder_checkpoint):
    import torch
    from transformers import AutoModel

    from granite_export.attention import blocked_attention

    model = AutoModel.from_pretrained(tiny_embedder_checkpoint, attn_implementation="eager").eval()
    ids = torch.from_numpy(_ids(2, 100, seed=2))
    mask = torch.ones_like(ids)
    mask[1, 37:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        with blocked_attention(model) as switched:
            got = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert switched
        assert model.config._attn_implementation == "eager"   # restored afterwards
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1, :37], want[1, :37], atol=1e-5, rtol=0)


def test_bert_keeps_eager_attention(minilm_folders):
    graph = onnx.load(str(minilm_folders["export"] / "onnx" / "model.onnx"), load_external_data=False)
    assert not [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]


def test_openvino_int8_keeps_the_padding_bias(exported_tiny_embedder):
    """NNCF leaves the global attention inputs fp32 (a quantizer would clamp the padding bias away)."""
    manifest = json.loads((exported_tiny_embedder / "granite_rt.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["backend"] == "openvino" and a["precision"] == "int8")
    assert "fp32_attention" in record["quantization"]
    assert record["parity"]["padding_min_cosine"] >= 0.999999


_CHILD = r"""
import json, resource, sys
import numpy as np
backend, path, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = np.random.default_rng(0).integers(5, 1000, (1, length)).astype(np.int64)
feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
if backend == "onnx":
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run = lambda: session.run(None, feed)[0]
else:
    import openvino as ov
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    run = lambda: compiled(feed)[0]
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = run()
print(json.dumps({"loaded_kib": loaded, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "finite": bool(np.isfinite(out).all()), "shape": list(out.shape)}))
"""


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_long_input_peak_memory_is_linear(tiny_embedder_folders, backend):
    """One 8,192-token input in a fresh process (address space capped at 3 GiB, so a regression fails fast)."""
    folder = tiny_embedder_folders["export"] if backend == "onnx" else tiny_embedder_folders["hub"]
    path = folder / ("onnx/model.onnx" if backend == "onnx" else "openvino/openvino_model.xml")
    cap = 3 * 2**30

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    result = subprocess.run([sys.executable, "-c", _CHILD, backend, str(path), str(LONG)], capture_output=True,
                            text=True, timeout=300, preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["finite"] and figures["shape"] == [1, 1, 64]   # the first position (CLS pooling)
    extra_mib = (figures["peak_kib"] - figures["loaded_kib"]) / 1024
    assert extra_mib < EXTRA_MIB, f"{backend}: {extra_mib:.0f} MiB above the loaded model for {LONG} tokens"


def test_non_modernbert_models_are_left_alone():
    from types import SimpleNamespace

    from granite_export.attention import blocked_attention

    bert = SimpleNamespace(config=SimpleNamespace(model_type="bert", _attn_implementation="eager"))
    with blocked_attention(bert) as switched:
        assert not switched
        assert bert.config._attn_implementation == "eager"


@pytest.mark.parametrize("folder", ["exported_tiny_embedder", "exported_tiny_reranker"])
@pytest.mark.parametrize("artifact", ["model.onnx", "model_qint8.onnx"])
def test_a_row_gives_the_same_bits_however_far_it_is_padded(request, folder, artifact):
    """onnxruntime, fp32 and static INT8: a row alone and padded to any width (as a longer batch neighbour pads it)
    gives bitwise the same output. A sliding block's key span, and the last layer's row of keys, start where the
    block does and hold a number of keys set by the length's step (attention.SPAN_STEP), never by the padding."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(request.getfixturevalue(folder) / "onnx" / artifact),
                                   providers=["CPUExecutionProvider"])
    for length in (1, 5, 23, 24, 40, 57, 64, 100):
        ids = _ids(1, length, seed=length)
        alone = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        for width in range(length + 1, length + 70):
            padded = np.zeros((1, width), np.int64)
            padded[0, :length] = ids[0]
            mask = (np.arange(width) < length).astype(np.int64)[None]
            got = session.run(None, {"input_ids": padded, "attention_mask": mask})[0]
            assert np.array_equal(got, alone), f"{length} tokens padded to {width}: max |Δ| {np.abs(got - alone).max()}"
