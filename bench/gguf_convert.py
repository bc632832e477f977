"""A ModernBERT embedder checkpoint as the GGUF files llama.cpp loads (F16 and Q8_0), cached under bench/.models/gguf/.

llama.cpp's own converter (convert_hf_to_gguf.py) is not on PyPI and imports torch; this writes the same
file with its gguf-py library (``gguf`` on PyPI): the ``modern-bert`` architecture, tensor names from
gguf's own ``TensorNameMap``, the metadata its ModernBertModel class writes (sliding window 128 and the
global-layer period, both RoPE bases, the FFN activation, CLS pooling from the sentence-transformers
files), the BPE vocabulary padded to the embedding rows, and the tensors as its ``--outtype f16`` /
``q8_0`` do: matrices F16 or Q8_0 (gguf's quantizer, from the fp32 weights), norms F32.
Runs in the bench's llamacpp venv. ``python -m bench.gguf_convert CHECKPOINT OUT.gguf f16|q8_0``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

OUTTYPES = ("f16", "q8_0")
# BENCH_GGUF_CACHE moves it (the tests convert their tiny checkpoints into a temporary folder).
CACHE = Path(os.environ.get("BENCH_GGUF_CACHE") or Path(__file__).resolve().parent / ".models" / "gguf")


def tensor_names(checkpoint_names: list[str], n_layers: int) -> dict[str, str]:
    """GGUF name of each checkpoint tensor (``model.`` prefixes dropped, as llama.cpp's converter does).

    Raises ValueError naming the tensors modern-bert has no place for (a head, or another architecture).
    """
    import gguf

    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MODERN_BERT, n_layers)
    names, unknown = {}, []
    for name in checkpoint_names:
        gguf_name = mapping.get_name(name.removeprefix("model."), try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            unknown.append(name)
        else:
            names[name] = gguf_name
    if unknown:
        raise ValueError(f"tensors with no modern-bert GGUF name: {unknown[:8]}")
    return names


def _pooling(checkpoint: Path):
    """llama.cpp's pooling type from the sentence-transformers Pooling module (CLS for Granite)."""
    import gguf

    modules = json.loads((checkpoint / "modules.json").read_text())
    path = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    config = json.loads((checkpoint / path / "config.json").read_text())
    for key, kind in (("pooling_mode_cls_token", gguf.PoolingType.CLS), ("pooling_mode_mean_tokens", gguf.PoolingType.MEAN),
                      ("pooling_mode_lasttoken", gguf.PoolingType.LAST)):
        if config.get(key):
            return kind
    raise ValueError(f"{checkpoint / path / 'config.json'}: a pooling mode llama.cpp lacks")


def _vocabulary(checkpoint: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """The BPE tokens by id, padded to the embedding's rows with unused ``[PAD{i}]`` entries; their types."""
    import gguf

    tok = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    special = {}
    for added in tok.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        special[added["id"]] = added.get("special", False)
    if max(by_id) >= vocab_size:
        raise ValueError(f"token id {max(by_id)} outside the {vocab_size}-row embedding")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if special.get(i) else
                         gguf.TokenType.USER_DEFINED if i in special else gguf.TokenType.NORMAL)
    return tokens, types


def convert(checkpoint: Path, out: Path, outtype: str) -> Path:
    """Write ``checkpoint`` (a ModernBERT sentence-transformers folder) to ``out`` as GGUF ``outtype``."""
    import gguf
    import numpy as np
    from gguf.quants import quantize
    from safetensors import safe_open

    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r}: one of {OUTTYPES}")
    config = json.loads((checkpoint / "config.json").read_text())
    if config.get("model_type") != "modernbert":
        raise ValueError(f"{checkpoint}: model_type {config.get('model_type')!r}, not modernbert")
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MODERN_BERT]
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(checkpoint.name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling(checkpoint))
    rope = config.get("rope_parameters") or {}  # transformers 5; transformers 4 configs: global/local_rope_theta
    writer.add_rope_freq_base(rope.get("full_attention", {}).get("rope_theta", config.get("global_rope_theta", 160_000.0)))
    writer.add_rope_freq_base_swa(rope.get("sliding_attention", {}).get("rope_theta", config.get("local_rope_theta", 10_000.0)))
    writer.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    writer.add_sliding_window(config["local_attention"])
    writer.add_sliding_window_pattern(config["global_attn_every_n_layers"])
    # silu → SwiGLU (the 97m), gelu → GeGLU: llama.cpp's LLM_KV_HIDDEN_ACT, newer than gguf 0.19's writer methods
    writer.add_string(f"{arch}.hidden_activation", config["hidden_activation"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = _vocabulary(checkpoint, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # ByteLevel BPE with GPT-2's split regex, as Granite's
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # merges, special token ids and add_bos/eos/sep from tokenizer.json's template (unused here: the bench feeds ids)
    gguf.SpecialVocab(checkpoint, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)

    with safe_open(str(checkpoint / "model.safetensors"), "np") as weights:
        names = tensor_names(list(weights.keys()), config["num_hidden_layers"])
        for name, gguf_name in names.items():
            data = weights.get_tensor(name).astype(np.float32)
            if data.ndim == 1:
                writer.add_tensor(gguf_name, data)
            elif outtype == "f16":
                writer.add_tensor(gguf_name, data.astype(np.float16))
            else:
                writer.add_tensor(gguf_name, quantize(data, gguf.GGMLQuantizationType.Q8_0),
                                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def converter_fingerprint() -> str:
    """This file and the gguf library's version: a changed converter writes new files."""
    from importlib.metadata import version

    return hashlib.sha256(Path(__file__).read_bytes() + version("gguf").encode()).hexdigest()[:12]


def ensure_gguf(checkpoint: Path, outtype: str, cache: Path = CACHE) -> Path:
    """The GGUF ``outtype`` of ``checkpoint``, converted once; keyed by the weights' path, size and mtime."""
    weights = (checkpoint / "model.safetensors").resolve()
    stat = weights.stat()
    key = hashlib.sha256(f"{weights} {stat.st_size} {stat.st_mtime_ns} {converter_fingerprint()}".encode()).hexdigest()[:12]
    target = cache / f"{checkpoint.resolve().parent.name}-{key}" / f"model-{outtype}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.{os.getpid()}")
    convert(checkpoint, staging, outtype)
    staging.replace(target)
    return target


if __name__ == "__main__":
    print(convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
