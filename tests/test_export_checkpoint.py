"""The export's checkpoint stage: MODEL resolution, kind detection, and refusal of config keys transformers ignores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from granite_rt.errors import ExportError, ModelNotFoundError, UnsupportedModelError

pytest.importorskip("transformers")
from granite_export import checkpoint as ckpt  # noqa: E402


def _copy_with_config(src: Path, dest: Path, edit) -> Path:
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    edit(config)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_kind_detected_from_architectures(tiny_embedder_checkpoint, tiny_reranker_checkpoint, minilm_checkpoint):
    assert ckpt.inspect(str(tiny_embedder_checkpoint)).kind == "embedder"
    assert ckpt.inspect(str(tiny_reranker_checkpoint)).kind == "reranker"
    bert = ckpt.inspect(str(minilm_checkpoint))
    assert (bert.kind, bert.model_type, bert.architecture) == ("embedder", "bert", "BertModel")


def test_kind_can_be_forced_but_not_into_a_missing_head(tiny_embedder_checkpoint, tiny_reranker_checkpoint):
    assert ckpt.inspect(str(tiny_reranker_checkpoint), kind="embedder").kind == "embedder"
    with pytest.raises(UnsupportedModelError, match="no sequence-classification head"):
        ckpt.inspect(str(tiny_embedder_checkpoint), kind="reranker")


def test_missing_folder_and_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="folder .*nope' does not exist"):
        ckpt.resolve_folder(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        ckpt.resolve_folder(str(tmp_path))


def test_hub_id_not_in_offline_cache_names_the_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="granite-test/not-cached"):
        ckpt.resolve_folder("granite-test/not-cached")


def test_transformers5_rope_keys_reach_the_loaded_model(tiny_embedder_checkpoint):
    raw = json.loads((tiny_embedder_checkpoint / "config.json").read_text())
    assert "rope_parameters" in raw and "layer_types" in raw  # the fixture writes transformers-5 keys
    model = ckpt.load_model(ckpt.inspect(str(tiny_embedder_checkpoint)))  # check_loaded passes
    assert [layer.attention_type for layer in model.layers] == raw["layer_types"]


def test_legacy_rope_keys_are_accepted_and_checked(tiny_embedder_checkpoint, tmp_path):
    def legacy(config):
        thetas = config.pop("rope_parameters")
        config["global_rope_theta"] = thetas["full_attention"]["rope_theta"]
        config["local_rope_theta"] = thetas["sliding_attention"]["rope_theta"]

    folder = _copy_with_config(tiny_embedder_checkpoint, tmp_path / "legacy", legacy)
    ckpt.load_model(ckpt.inspect(str(folder)))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(rope_theta_scaled=2.0), "ModernBERT ignores"),
    (lambda c: c.update(global_rope_theta=999.0), "contradicts itself"),
    (lambda c: c["rope_parameters"]["full_attention"].update(factor=4.0), "only the default RoPE"),
    (lambda c: c["rope_parameters"].update(chunked_attention={"rope_theta": 1.0}), "must map"),
    (lambda c: c.update(layer_types=["full_attention"]), "layer_types"),
])
def test_contradicting_or_unknown_rope_keys_are_refused(tiny_embedder_checkpoint, tmp_path, edit, message):
    folder = _copy_with_config(tiny_embedder_checkpoint, tmp_path / "bad", edit)
    with pytest.raises(UnsupportedModelError, match=message):
        ckpt.inspect(str(folder))


def test_bert_with_ignored_position_settings_is_refused(minilm_checkpoint, tmp_path):
    folder = _copy_with_config(minilm_checkpoint, tmp_path / "rel", lambda c: c.update(position_embedding_type="relative_key"))
    with pytest.raises(UnsupportedModelError, match="position_embedding_type"):
        ckpt.inspect(str(folder))
    folder = _copy_with_config(minilm_checkpoint, tmp_path / "rope", lambda c: c.update(rope_theta=10000.0))
    with pytest.raises(UnsupportedModelError, match="absolute position embeddings"):
        ckpt.inspect(str(folder))


def test_loaded_model_that_drops_a_key_is_refused(tiny_embedder_checkpoint):
    checkpoint = ckpt.inspect(str(tiny_embedder_checkpoint))
    model = ckpt.load_model(checkpoint)
    model.config.local_attention = 8  # what a transformers that ignored the key would have loaded
    with pytest.raises(UnsupportedModelError, match="local_attention"):
        ckpt.check_loaded(model, checkpoint.raw_config)


def test_loaded_rope_that_differs_from_config_is_refused(tiny_embedder_checkpoint):
    checkpoint = ckpt.inspect(str(tiny_embedder_checkpoint))
    model = ckpt.load_model(checkpoint)
    model.rotary_emb.full_attention_inv_freq.mul_(2.0)  # a model running another rope_theta
    with pytest.raises(UnsupportedModelError, match="full_attention RoPE"):
        ckpt.check_loaded(model, checkpoint.raw_config)


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        ckpt.inspect(str(tmp_path))


def _gather_graph(table, extra_gathers: int = 0):
    """input_ids → Gather(table) → output, plus optional second Gathers on input_ids."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"], name="embeddings")]
    nodes += [helper.make_node("Gather", ["table", "input_ids"], [f"again{i}"]) for i in range(extra_gathers)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [None, None, table.shape[1]])],
        [numpy_helper.from_array(table.astype(np.float32), "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_token_embedding_compression_keeps_each_row_within_half_a_step():
    import numpy as np
    import onnxruntime as ort

    from granite_export.quantize import compress_token_embeddings

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 16)) * rng.uniform(0.01, 5, size=(50, 1))  # rows of very different scales
    table[7] = 0.0  # an all-zero row must not divide by zero
    model = _gather_graph(table)
    assert compress_token_embeddings(model) == 50
    assert {i.name: i.data_type for i in model.graph.initializer} == {"table_int8": 3, "table_scale": 1}
    ids = np.array([[0, 7, 49, 3], [3, 3, 1, 0]])
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"input_ids": ids})[0]
    step = np.abs(table).max(axis=1) / 127
    assert np.all(np.abs(got - table[ids]) <= step[ids][..., None] / 2 + 1e-6)
    assert np.all(got[0, 1] == 0)


def test_token_embedding_compression_refuses_an_ambiguous_graph():
    import numpy as np

    from granite_export.quantize import compress_token_embeddings

    with pytest.raises(ExportError, match="found 2"):
        compress_token_embeddings(_gather_graph(np.ones((4, 2)), extra_gathers=1))
