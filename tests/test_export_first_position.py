"""A CLS-pooled ModernBERT is exported computing only what its first position depends on (export/first_position.py).

The tiny fixtures end in a global layer (only the last layer is cut to one query); here shapes ending in
sliding-window layers, like the 97m embedder (…, global, sliding, sliding), check the prefix cut: inputs
longer and shorter than each layer's prefix, padded rows, onnxruntime and OpenVINO against eager torch.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

from granite_rt.errors import UnsupportedModelError  # noqa: E402
from granite_rt.pooling import pool  # noqa: E402

# Tiny window ±8: a last sliding layer sees 9 positions, the one before it 17; 40 and 300 cross both.
LENGTHS = [300, 129, 40, 18, 17, 16, 10, 9, 8, 1]
SLIDING, GLOBAL = "sliding_attention", "full_attention"


def test_prefix_lengths_of_the_published_layer_patterns():
    from granite_export.first_position import prefix_lengths

    granite_97m = [GLOBAL if i % 3 == 0 else SLIDING for i in range(12)]
    assert prefix_lengths(granite_97m, 64) == [None] * 10 + [129, 65]
    reranker = [GLOBAL if i % 3 == 0 else SLIDING for i in range(22)]   # layer 21 is global: no prefix cut
    assert prefix_lengths(reranker, 64) == [None] * 22


@pytest.fixture(scope="module", params=[("embedder", 6), ("reranker", 5)], ids=["embedder-6", "reranker-5"])
def sliding_tail(request, tmp_path_factory):
    """(eager torch model, first-position ONNX graph, output name) of a tiny ModernBERT whose last layers slide."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from granite_export.onnx_export import export_onnx
    from granite_export.random_models import TINY_EMBEDDER, TINY_RERANKER, build_checkpoint

    kind, layers = request.param
    shape = dataclasses.replace(TINY_EMBEDDER if kind == "embedder" else TINY_RERANKER, num_hidden_layers=layers)
    folder = tmp_path_factory.mktemp(f"sliding-tail-{kind}")
    checkpoint = build_checkpoint(folder / "checkpoint", shape, max_seq_length=128)
    model_class = AutoModelForSequenceClassification if kind == "reranker" else AutoModel
    model = model_class.from_pretrained(checkpoint, attn_implementation="eager").eval()
    assert model.config.layer_types[-1] == SLIDING
    output = "logits" if kind == "reranker" else "last_hidden_state"
    path = export_onnx(model, folder / "model.onnx", ["input_ids", "attention_mask"], output, first_position=True)
    return model, path, output


def _batch(lengths: list[int]) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(3).integers(5, 1000, (len(lengths), max(lengths))).astype(np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_first_position_graph_equals_eager_torch(sliding_tail):
    import onnxruntime as ort
    import openvino as ov
    import torch

    from granite_rt.onnx_graph import unfuse_rotary

    model, path, output = sliding_tail
    feed = _batch(LENGTHS)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        want = (out.logits if output == "logits" else out.last_hidden_state[:, :1]).numpy()
    got_ort = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    graph = onnx.load(str(path))
    unfuse_rotary(graph)   # as every IR of a model folder is converted (granite_rt.int8_recipe.openvino_model)
    compiled = ov.Core().compile_model(ov.convert_model(io.BytesIO(graph.SerializeToString())), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got_ov = compiled(feed)[0]
    for got in (got_ort, got_ov):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_last_layers_run_on_the_prefix_alone(sliding_tail):
    """The graph really is cut: the last layer's query and MLP see one position, the tail layers a constant prefix."""
    from granite_export.first_position import prefix_lengths

    model, path, _ = sliding_tail
    cuts = [n for n in prefix_lengths(list(model.config.layer_types), 8) if n is not None]
    assert cuts == ([17, 9] if len(cuts) == 2 else [9])   # (L − i)·w + 1 for each layer after the last global, w = 8
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {tuple(onnx.numpy_helper.to_array(n.attribute[0].t).ravel().tolist())
                 for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims in ([1], [])}
    assert {(n,) for n in cuts} <= constants


def test_exported_embedder_folder_records_it(exported_tiny_embedder, minilm_folders):
    manifest = json.loads((exported_tiny_embedder / "granite_rt.json").read_text())
    assert manifest["pooling"] == "cls" and manifest["first_position_only"] is True
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported_tiny_embedder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, _batch([20, 7]))[0].shape == (2, 1, 64)
    bert = json.loads((minilm_folders["export"] / "granite_rt.json").read_text())
    assert bert["pooling"] == "mean" and bert["first_position_only"] is False


def test_pooling_reads_a_first_position_output_only_as_cls():
    hidden = np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(pool(hidden, mask, ["cls"]), hidden[:, 0])
    with pytest.raises(UnsupportedModelError, match="first position alone.*pooling here: mean"):
        pool(hidden, mask, ["mean"])
    with pytest.raises(UnsupportedModelError, match="right-padded"):
        pool(hidden, np.array([[0, 1, 1, 1], [1, 1, 0, 0]]), ["cls"])
    with pytest.raises(UnsupportedModelError, match="returned 2 position"):
        pool(np.zeros((2, 2, 3), np.float32), mask, ["cls"])
