"""A ModernBERT graph that computes only what CLS pooling reads: the first position's dependency cone.

A CLS-pooled model (the Granite R2 embedders; rerankers whose ``classifier_pooling`` is "cls") reads one
position of the last layer, so the export (``first_position_forward``) leaves out what cannot reach it:

- **The last layer** computes its query, output projection and MLP for position 0 only (keys and values
  for every position it sees). The rotary embedding at position 0 is the identity (cos 0 = 1, sin 0 = 0),
  so that query is not rotated; the attention over its keys is one row of scores with the padding bias.
- **Sliding-window layers after the last global layer**: a position's output in such a layer depends only
  on the positions within ``w = config.sliding_window`` of it in the layer before, so layer ``i`` (of ``L``)
  needs its input for the first ``(L − i)·w + 1`` positions alone; each of them runs on that prefix
  (a prefix keeps every position, its rotary angle and its padding bit where they were). The 97m
  embedder (12 layers, a global one every 3rd, w = 64) thus runs its last two layers on 129 and 65 positions;
  the reranker (22 layers, the last one global) only saves the last layer's query, output and MLP.

The math of every position that reaches the output is unchanged: the export's parity check against
sentence-transformers on torch (export/verify.py, fp32 cosine ≥ 0.99999) holds for these graphs as for the
full ones. The embedder graph's ``last_hidden_state`` is [batch, 1, hidden] (the first position), which CLS
pooling reads as it reads the full tensor (granite_rt.pooling.pool checks that nothing else does).

Measured: see docs/export.md ("First position only").
"""

from __future__ import annotations

from .attention import MASK_VALUE, supported

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


def _last_layer_first_position(layer, hidden, valid, cos, sin):
    """``ModernBertEncoderLayer.forward`` for position 0 alone: [B, n, H] in (n positions it attends to), [B, 1, H] out."""
    import torch
    import torch.nn.functional as F
    from transformers.models.modernbert.modeling_modernbert import rotate_half

    attn = layer.attn
    batch, length = hidden.shape[0], hidden.shape[1]
    heads, head_dim = attn.config.num_attention_heads, attn.head_dim
    size = heads * head_dim
    weight, bias = attn.Wqkv.weight, attn.Wqkv.bias
    x = layer.attn_norm(hidden)
    query = F.linear(x[:, :1], weight[:size], None if bias is None else bias[:size])          # [B, 1, size]
    keys_values = F.linear(x, weight[size:], None if bias is None else bias[size:])          # [B, n, 2·size]
    query = query.view(batch, 1, heads, head_dim).transpose(1, 2)                             # [B, h, 1, d]
    keys_values = keys_values.view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # [2, B, h, n, d]
    key, value = keys_values[0], keys_values[1]
    key = key * cos[:, None] + rotate_half(key) * sin[:, None]
    scores = (query @ key.transpose(-1, -2)) * (head_dim ** -0.5)
    scores = scores + ((~valid).to(scores.dtype) * MASK_VALUE)[:, None, None, :]
    out = (torch.softmax(scores, dim=-1) @ value).transpose(1, 2).reshape(batch, 1, size)
    first = hidden[:, :1] + attn.out_drop(attn.Wo(out))
    return first + layer.mlp(layer.mlp_norm(first))


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
            cos, sin = rotary[kind]
            hidden = _last_layer_first_position(layer, hidden, attention_mask.bool(), cos, sin)
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
