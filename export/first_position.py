"""A ModernBERT graph that computes only what CLS pooling reads: the first position's dependency cone.

A CLS-pooled model (the Granite R2 embedders; rerankers whose ``classifier_pooling`` is "cls") reads one
position of the last layer, so the export (``first_position_forward``) leaves out what cannot reach it:

- **The last layer** computes its attention scores, output projection and MLP for position 0 only: one row
  of scores over the keys of every position it sees, with the padding bias.
- **Sliding-window layers after the last global layer**: a position's output in such a layer depends only
  on the positions within ``w = config.sliding_window`` of it in the layer before, so layer ``i`` (of ``L``)
  needs its input for the first ``(L − i)·w + 1`` positions alone; each of them runs on that prefix
  (a prefix keeps every position, its rotary angle and its padding bit where they were). The 97m
  embedder (12 layers, a global one every 3rd, w = 64) thus runs its last two layers on 129 and 65 positions;
  the reranker (22 layers, the last one global) only saves the last layer's scores, output and MLP for
  all but one position.

The math of every position that reaches the output is unchanged: the export's parity check against
sentence-transformers on torch (export/verify.py, fp32 cosine ≥ 0.99999) holds for these graphs as for the
full ones. The embedder graph's ``last_hidden_state`` is [batch, 1, hidden] (the first position), which CLS
pooling reads as it reads the full tensor (granite_rt.pooling.pool checks that nothing else does).

Measured: docs/export.md ("ModernBERT read by CLS pooling").
"""

from __future__ import annotations

from contextlib import contextmanager
from types import MethodType
from typing import Iterator

from .attention import MASK_VALUE, stepped_positions, supported

SLIDING = "sliding_attention"
GLOBAL = "full_attention"


def applies(model, kind: str, pooling: str | None) -> bool:
    """Whether ``model`` is exported first-position-only: a ModernBERT whose output reads position 0 alone."""
    if not supported(model):
        return False
    if kind == "reranker":
        return getattr(model.config, "classifier_pooling", None) == "cls"
    return pooling == "cls"


def prefix_lengths(layer_types: list[str], window: int) -> list[int | None]:
    """Per layer, the input positions the first position's output needs (None: all of them).

    Layer ``i`` after the last global layer needs ``(L − i)·w + 1`` positions; the last layer, if sliding,
    ``w + 1``; every layer up to the last global one needs the whole sequence.
    """
    count = len(layer_types)
    last_global = max((i for i, t in enumerate(layer_types) if t != SLIDING), default=-1)
    return [None if i <= last_global else (count - i) * window + 1 for i in range(count)]


def _masks(base, hidden, attention_mask) -> dict:
    """The per-type attention inputs ModernBERT builds for ``hidden`` (through the registered mask interface)."""
    from transformers.models.modernbert import modeling_modernbert as modeling

    kwargs = {"config": base.config, "inputs_embeds": hidden, "attention_mask": attention_mask}
    return {GLOBAL: modeling.create_bidirectional_mask(**kwargs),
            SLIDING: modeling.create_bidirectional_sliding_window_mask(**kwargs)}


def _first_position_layer_forward(self, hidden_states, attention_mask=None, position_embeddings=None, **_):
    """``ModernBertEncoderLayer.forward`` returning position 0 alone: [B, n, H] in (the n positions it attends
    to), [B, 1, H] out; ``attention_mask`` is their [B, n] padding mask. Query, key and value are one projection
    of every position, as in the layer itself (the query's extra positions are ~0.5 % of the reranker's work, whose
    last layer is global, and ~0.07 % of the 97m's at 512 tokens, counted from the shapes); the scores, output
    projection and MLP are computed for position 0 only. Installed as the last layer's forward by
    ``_first_position_only`` so the traced nodes keep the layer's names (the INT8 recipe keeps ``mlp/Wo`` fp32
    by name)."""
    import torch
    from transformers.models.modernbert import modeling_modernbert as modeling

    attn = self.attn
    batch, length = hidden_states.shape[0], hidden_states.shape[1]
    heads, head_dim = attn.config.num_attention_heads, attn.head_dim
    qkv = attn.Wqkv(self.attn_norm(hidden_states)).view(batch, length, 3, heads, head_dim)
    query, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))                 # [B, h, n, d]
    cos, sin = position_embeddings
    query, key = modeling.apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=1)   # fused in the export
    # The row of scores runs over n keys rounded up to SPAN_STEP (the extra ones read as the last key, masked), so its
    # sums do not depend on how far the row is padded (attention.SPAN_STEP).
    pos = torch.ones_like(attention_mask[0], dtype=torch.long).cumsum(0) - 1
    keys = stepped_positions(pos)
    kidx = torch.minimum(keys, pos[-1:])
    allowed = attention_mask[:, kidx] & (keys <= pos[-1:])[None]                          # [B, n']
    scores = (query[:, :, :1] @ key[:, :, kidx].transpose(-1, -2)) * (head_dim ** -0.5)   # [B, h, 1, n']
    scores = scores + ((~allowed).to(scores.dtype) * MASK_VALUE)[:, None, None, :]
    out = (torch.softmax(scores, dim=-1) @ value[:, :, kidx]).transpose(1, 2).reshape(batch, 1, heads * head_dim)
    first = hidden_states[:, :1] + attn.out_drop(attn.Wo(out))
    return first + self.mlp(self.mlp_norm(first))


@contextmanager
def _first_position_only(layer) -> Iterator[None]:
    """Within the block, ``layer`` (a ModernBertEncoderLayer) runs ``_first_position_layer_forward``."""
    layer.forward = MethodType(_first_position_layer_forward, layer)
    try:
        yield
    finally:
        del layer.forward


def first_position_hidden(base, input_ids, attention_mask):
    """``ModernBertModel.forward(...).last_hidden_state[:, :1]``, computing only the positions it depends on."""
    import torch

    config = base.config
    types = list(config.layer_types)
    prefixes = prefix_lengths(types, int(config.sliding_window))
    hidden = base.embeddings(input_ids=input_ids)
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    rotary = {t: base.rotary_emb(hidden, positions, t) for t in set(types)}
    masks = _masks(base, hidden, attention_mask)
    layers = list(base.layers)
    for i, layer in enumerate(layers):
        kind = layer.attention_type
        if prefixes[i] is not None:  # the prefix the rest needs: hidden, padding and rotary cut alike
            n = prefixes[i]
            hidden, attention_mask = hidden[:, :n], attention_mask[:, :n]
            rotary = {t: (cos[:, :n], sin[:, :n]) for t, (cos, sin) in rotary.items()}
            masks = _masks(base, hidden, attention_mask)
        if i == len(layers) - 1:
            with _first_position_only(layer):
                hidden = layer(hidden, attention_mask=attention_mask.bool(), position_embeddings=rotary[kind])
        else:
            hidden = layer(hidden, attention_mask=masks[kind], position_embeddings=rotary[kind])
    return base.final_norm(hidden)


def first_position_forward(model, output_name: str):
    """``forward(input_ids, attention_mask) → output`` for the export: ``last_hidden_state`` [B, 1, H] of a
    ModernBertModel, or ``logits`` of a ModernBertForSequenceClassification with CLS pooling."""
    def forward(input_ids, attention_mask):
        if output_name == "logits":
            hidden = first_position_hidden(model.model, input_ids, attention_mask)[:, 0]
            return model.classifier(model.drop(model.head(hidden)))
        return first_position_hidden(model, input_ids, attention_mask)

    return forward
