"""Random-weight checkpoints of the Granite R2 structures, for offline tests and benchmarks.

Speed does not depend on weight values, and parity tests need only *some* weights, so both
tests (tiny shapes) and bench/ (the exact published shapes) build their models here. Each
checkpoint is written in the layout IBM's Hub repos use: a transformers checkpoint, a fast
tokenizer with the Granite special tokens, and sentence-transformers files for the embedder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

Kind = Literal["embedder", "reranker"]


@dataclass(frozen=True)
class ModelShape:
    """The ModernBERT hyper-parameters that define one Granite R2 model."""

    kind: Kind
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_activation: str
    vocab_size: int
    max_position_embeddings: int
    local_attention: int = 128
    global_attn_every_n_layers: int = 3
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    # Special tokens as the real tokenizers spell them.
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    unk_token: str = "[UNK]"
    mask_token: str = "[MASK]"
    matryoshka_dims: tuple[int, ...] = field(default_factory=tuple)


# The published shapes (README of each model card).
GRANITE_97M_MULTILINGUAL_R2 = ModelShape(
    kind="embedder", num_hidden_layers=12, hidden_size=384, num_attention_heads=12,
    intermediate_size=1536, hidden_activation="silu", vocab_size=180_000,
    max_position_embeddings=32_768, cls_token="<|startoftext|>", sep_token="<|return|>",
    pad_token="<|pad|>", unk_token="<|unk|>", mask_token="<|mask|>",
)
GRANITE_RERANKER_ENGLISH_R2 = ModelShape(
    kind="reranker", num_hidden_layers=22, hidden_size=768, num_attention_heads=12,
    intermediate_size=1152, hidden_activation="gelu", vocab_size=50_368,
    max_position_embeddings=8_192,
)
# Tiny shapes of the same structure, for tests: seconds to build, export and run.
TINY_EMBEDDER = ModelShape(
    kind="embedder", num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
    intermediate_size=96, hidden_activation="silu", vocab_size=1_200,
    max_position_embeddings=256, local_attention=16, cls_token="<|startoftext|>",
    sep_token="<|return|>", pad_token="<|pad|>", unk_token="<|unk|>", mask_token="<|mask|>",
)
TINY_RERANKER = ModelShape(
    kind="reranker", num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
    intermediate_size=96, hidden_activation="gelu", vocab_size=1_200,
    max_position_embeddings=256, local_attention=16,
)

_BUILTIN_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the chemical formula of water?",
    "Water is a chemical substance with the formula H2O.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "日本語のテキストも扱えます。", "Русский текст тоже работает.", "中文文本也可以。",
    "Boundary layer flow over a flat plate at supersonic speeds.",
]


def train_tokenizer(shape: ModelShape, texts: Iterable[str], vocab_size: int):
    """Train a small byte-level BPE tokenizer carrying ``shape``'s special tokens and pair template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = [shape.cls_token, shape.pad_token, shape.sep_token, shape.unk_token, shape.mask_token]
    tok = Tokenizer(models.BPE(unk_token=shape.unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls, sep = shape.cls_token, shape.sep_token
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok


def build_checkpoint(
    out_dir: str | Path,
    shape: ModelShape,
    *,
    texts: Iterable[str] | None = None,
    tokenizer_vocab: int = 1_000,
    max_seq_length: int | None = None,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Write a random-weight checkpoint of ``shape`` to ``out_dir`` and return the folder.

    The embedder gets sentence-transformers files (CLS pooling + Normalize, as Granite ships);
    the reranker is a ModernBertForSequenceClassification with one label. ``initializer_range``: the weights' std;
    at ModernBERT's 0.02 a tiny model maps every text to nearly one vector (cosine 0.99999 between texts), larger
    gives vectors that differ as a trained model's do (what the INT8 gate's figures need).
    """
    import torch
    from transformers import ModernBertConfig, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(texts) if texts is not None else []
    tokenizer = train_tokenizer(shape, corpus + _BUILTIN_TEXT, min(tokenizer_vocab, shape.vocab_size))
    max_len = max_seq_length or shape.max_position_embeddings
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=max_len,
        cls_token=shape.cls_token, sep_token=shape.sep_token, pad_token=shape.pad_token,
        unk_token=shape.unk_token, mask_token=shape.mask_token,
        bos_token=shape.cls_token, eos_token=shape.sep_token,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(out)
    _write_special_tokens_map(out, shape)

    config = ModernBertConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size, hidden_activation=shape.hidden_activation,
        max_position_embeddings=shape.max_position_embeddings,
        local_attention=shape.local_attention,
        global_attn_every_n_layers=shape.global_attn_every_n_layers,
        global_rope_theta=shape.global_rope_theta, local_rope_theta=shape.local_rope_theta,
        pad_token_id=fast.pad_token_id, cls_token_id=fast.cls_token_id,
        sep_token_id=fast.sep_token_id, bos_token_id=fast.cls_token_id,
        eos_token_id=fast.sep_token_id, num_labels=1, initializer_range=initializer_range,
        initializer_cutoff_factor=max(2.0, 3 * initializer_range / 0.02),
    )
    torch.manual_seed(seed)
    if shape.kind == "embedder":
        from transformers import ModernBertModel

        model = ModernBertModel(config)
    else:
        from transformers import ModernBertForSequenceClassification

        model = ModernBertForSequenceClassification(config)
    model.eval().save_pretrained(out)
    if shape.kind == "embedder":
        _write_sentence_transformers_files(out, shape, max_len)
    return out


def _write_special_tokens_map(out: Path, shape: ModelShape) -> None:
    names = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token")
    tokens = {name: getattr(shape, name) for name in names}
    tokens.update(bos_token=shape.cls_token, eos_token=shape.sep_token)
    (out / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2))


def _write_sentence_transformers_files(out: Path, shape: ModelShape, max_len: int) -> None:
    """The files sentence-transformers writes for Transformer → Pooling(cls) → Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": shape.hidden_size, "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_len, "do_lower_case": False}, indent=2)
    )
    st_config: dict = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    if shape.matryoshka_dims:
        st_config["matryoshka_dims"] = list(shape.matryoshka_dims)
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))


def inject_outlier_channels(folder: str | Path, out_dir: str | Path, factor: float,
                            channels: tuple[int, ...] = (3, 17, 42)) -> Path:
    """A copy of the ModernBERT checkpoint ``folder`` whose pre-norm activations carry outlier channels, as
    trained encoders have (a few hidden dims 50-100x the rest), computing the same function.

    Each attention/MLP pre-norm's weight is multiplied by ``factor`` at ``channels`` and the matching input
    columns of the projection it feeds (Wqkv, Wi) divided by it: fp32 outputs are unchanged (to rounding)
    while the activations an INT8 recipe quantizes span ``factor`` times their former range.
    """
    import re
    import shutil

    from safetensors.torch import load_file, save_file

    source, out = Path(folder), Path(out_dir)
    shutil.copytree(source, out, dirs_exist_ok=True)
    weights = load_file(str(source / "model.safetensors"))
    feeds = {"attn_norm": "attn.Wqkv", "mlp_norm": "mlp.Wi"}
    touched = 0
    for name in list(weights):
        match = re.fullmatch(r"(.*layers\.\d+\.)(attn_norm|mlp_norm)\.weight", name)
        if not match:
            continue
        projection = f"{match.group(1)}{feeds[match.group(2)]}.weight"
        for channel in channels:
            weights[name][channel] *= factor
            weights[projection][:, channel] /= factor
        touched += 1
    if not touched:
        raise ValueError(f"{source}: no ModernBERT pre-norm weights (layers.N.attn_norm / mlp_norm) found")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return out
