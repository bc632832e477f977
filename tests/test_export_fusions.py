"""The export traces ModernBERT's rotary embedding and GLU up-projection as fused ops (granite_export/fusions.py).

These fail if a transformers change stops the rewrite from applying (the graph falls back to the
``Slice``/``Neg``/``Concat`` form, slower but correct), if the rewritten layers compute anything other
than eager torch, or if the model is left patched after the export.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")


def _graph(folder):
    return onnx.load(str(folder / "onnx" / "model.onnx"), load_external_data=False).graph


def _layers(folder) -> int:
    return json.loads((folder / "config.json").read_text())["num_hidden_layers"]


@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_rotary_is_one_node_per_query_and_key(kind, tiny_embedder_folders, tiny_reranker_folders):
    folder = {"embedder": tiny_embedder_folders, "reranker": tiny_reranker_folders}[kind]["export"]
    graph = _graph(folder)
    rotary = [n for n in graph.node if n.op_type == "RotaryEmbedding"]
    assert len(rotary) == 2 * _layers(folder)
    assert {n.domain for n in rotary} == {"com.microsoft"}
    # rotate_half's Neg is gone, and the position ids are per token (OpenVINO mistakes the 1-element form).
    assert not [n for n in graph.node if n.op_type == "Neg"]
    producers = {o: n for n in graph.node for o in n.output}
    assert {producers[n.input[1]].op_type for n in rotary} == {"Expand"}


@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_glu_up_projection_is_two_matmuls_without_slices(kind, tiny_embedder_folders, tiny_reranker_folders):
    folder = {"embedder": tiny_embedder_folders, "reranker": tiny_reranker_folders}[kind]["export"]
    graph = _graph(folder)
    for layer in range(_layers(folder)):
        scope = f"/layers.{layer}/mlp/"
        ops = [n.op_type for n in graph.node if scope in n.name]
        assert ops.count("MatMul") == 3, ops          # value half, gate half, Wo
        assert "Slice" not in ops and "Split" not in ops, ops


def test_torch_side_of_the_fused_layers_equals_eager_and_is_restored(tiny_reranker_checkpoint):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.models.modernbert import modeling_modernbert as modeling

    from granite_export.fusions import fused_layers

    model = AutoModelForSequenceClassification.from_pretrained(tiny_reranker_checkpoint,
                                                               attn_implementation="eager").eval()
    original = modeling.apply_rotary_pos_emb
    ids = torch.from_numpy(np.random.default_rng(3).integers(5, 1000, (2, 40)).astype(np.int64))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        with fused_layers(model) as fused:
            assert fused and modeling.apply_rotary_pos_emb is not original
            got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert modeling.apply_rotary_pos_emb is original
    assert not [m for m in model.modules() if "forward" in vars(m)]   # no instance left patched


def test_bert_is_not_rewritten(minilm_folders):
    graph = _graph(minilm_folders["export"])
    assert not [n for n in graph.node if n.op_type == "RotaryEmbedding"]


def test_unfused_rotary_computes_the_same(tiny_embedder_folders):
    import onnxruntime as ort

    from granite_export.fusions import unfuse_rotary

    folder = tiny_embedder_folders["export"]
    fused = onnx.load(str(folder / "onnx" / "model.onnx"))
    plain = onnx.ModelProto()
    plain.CopyFrom(fused)
    assert unfuse_rotary(plain) == 2 * _layers(folder)
    assert not [n for n in plain.graph.node if n.op_type == "RotaryEmbedding"]
    ids = np.random.default_rng(4).integers(5, 1000, (2, 50)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 31:] = 0
    feed = {"input_ids": ids, "attention_mask": mask}
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                 for m in (fused, plain))
    assert want.shape == (2, 1, 64)   # the first position (CLS pooling), which every rotated layer reaches
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)



def test_exported_openvino_ir_loads_from_the_model_cache_with_the_same_results(exported_tiny_embedder, monkeypatch,
                                                                            tmp_path):
    """Converted from the fused node, the IR returned NaN rows in most loads from OpenVINO's model cache."""
    from granite_rt import Embedder

    monkeypatch.setenv("GRANITE_RT_CACHE", str(tmp_path / "cache"))
    texts = ["a short text", "and a longer one that pads the short one in the same batch"]
    want = Embedder(exported_tiny_embedder, backend="onnx", dtype="fp32").encode(texts)
    for _ in range(4):  # the first compiles and fills the cache, the others load from it
        got = Embedder(exported_tiny_embedder, backend="openvino", dtype="fp32").encode(texts)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-5)
