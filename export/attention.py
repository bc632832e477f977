"""Memory-bounded attention for the exported ModernBERT graph (32k-token inputs on CPU).

The eager graph materialises ``heads × S²`` fp32 scores in every layer (48 GiB per tensor at 32,768
tokens on the 97m model). For the export, ModernBERT runs this attention implementation instead
(registered with transformers' ``AttentionInterface``/``AttentionMaskInterface`` under ``NAME``):

- **Global layers** become one ``com.microsoft.MultiHeadAttention`` node. onnxruntime's CPU kernel
  computes it with its tiled flash-attention kernel (memory O(S)), but only when the node has no mask
  input, so padding rides along in the scores instead: the query gets one extra channel of ones and the
  key one extra channel holding 0 for real tokens and ``MASK_VALUE`` for padding, so
  ``q'·k' = scale·q·k + bias`` (the query is pre-scaled, the node's ``scale`` is 1). OpenVINO's ONNX
  frontend turns the same node into ``ScaledDotProductAttention``, which its CPU plugin also computes
  in blocks. (A CLS-pooled model's last layer attends for one query and does not come here:
  first_position.py computes its one row of scores with plain ops.)
- **Sliding-window layers** (``|i − j| ≤ config.sliding_window``) are computed blockwise with plain
  ONNX ops: the sequence is cut into blocks of ``w = sliding_window`` tokens and each block attends to a
  span of ``3w`` keys around it, so the scores are ``heads × S × 3w`` instead of ``heads × S²``; inputs
  shorter than a block or a span use smaller ones (a 32-token query costs what eager attention costs).

The padding bias of both layer types is computed once per forward pass (by the mask interface), not
per layer. Masked scores get ``MASK_VALUE`` (−1e4, representable in fp16) instead of eager
attention's ``finfo.min``: both give exactly zero weight after the softmax for any realistic scores.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from granite_rt.onnx_graph import MS_DOMAIN

NAME = "granite_rt_blocked"
MASK_VALUE = -1.0e4
# A sliding block's key span holds min(3w, S rounded up to this) keys. onnxruntime's CPU softmax (MLAS, AVX-512) sums
# 64 elements a step in four 16-wide accumulators, then 16 at a time, then one by one: with spans of a multiple of 64
# a key meets the same accumulator whatever the padding, so a row gives the same bits alone and padded.
SPAN_STEP = 64


class Prepared:
    """What the mask interface hands to every layer of one attention type, computed once per forward."""

    def __init__(self, valid, **tensors: Any) -> None:
        self.valid = valid          # [B, S] bool: real tokens
        self.tensors = tensors      # see _global_inputs / _sliding_inputs


def _valid(attention_mask, batch_size, q_length, device):
    import torch

    if attention_mask is None:
        return torch.ones(batch_size, q_length, dtype=torch.bool, device=device)
    return attention_mask.bool()


def _global_inputs(valid, num_heads: int, dtype) -> dict:
    """The extra query channel (ones) and key channel (0 / MASK_VALUE), [B, S, H, 1]."""
    import torch

    bias = ((~valid).to(dtype) * MASK_VALUE)[:, :, None, None].expand(-1, -1, num_heads, 1)
    return {"ones": torch.ones_like(bias), "bias": bias}


def stepped_positions(pos):
    """0 … S' − 1 for positions ``pos`` = 0 … S − 1, S' = S rounded up to SPAN_STEP (traced with S dynamic)."""
    return (pos[::SPAN_STEP][:, None] + pos.new_tensor(range(SPAN_STEP))[None]).reshape(-1)


def _sliding_inputs(valid, window: int, dtype) -> dict:
    """Indices and bias of the blocked sliding window, shared by every sliding layer.

    Queries come in blocks of ``b = min(w, S)`` positions, and each block attends to a span of
    ``K = min(3w, S rounded up to SPAN_STEP)`` keys that covers its window, starting ``w`` before the block
    (0 for the first), so a short input costs about what eager attention costs and a long one ``S × 3w``
    scores. Where a span starts and how long it is depend on the block and on S's step alone, never on how far
    S pads a row: a row's keys keep their places, and onnxruntime gives it the same bits alone and in any batch.
    (Spans shifted to end inside the sequence moved with the padded length: 4 of 400 Cranfield texts on the 97m
    INT8 differed alone and in one call, by up to 9.6e-5, 2026-12-08.) ``qidx`` [blocks, b]: each block's query
    positions (the last block's tail repeats the last position; those rows are cut off); ``kidx`` [blocks, K]:
    the keys (past the end: the last position, masked); ``bias`` [B, 1, blocks, b, K]: 0 where |i − j| ≤ w and
    key j is a real token, else MASK_VALUE; ``length`` [1]: S.
    """
    import torch

    w = int(window)
    # Positions 0 … S−1 as a tensor derived from the input's shape (so the graph keeps S dynamic); slices of
    # it with constant ends give the sizes min(w, S) and min(3w, S) without data-dependent Python.
    pos = torch.ones_like(valid[0], dtype=torch.long).cumsum(0) - 1
    last = pos[-1:]
    starts = pos[::w]                                                   # [blocks]
    qidx = torch.minimum(starts[:, None] + pos[:w][None], last)         # [blocks, b]
    span = stepped_positions(pos)[: 3 * w]                              # [K]
    keys = (starts - w).clamp(min=0)[:, None] + span[None]              # [blocks, K]: may run past the end
    kidx = torch.minimum(keys, last)                                    # ... read there as the last position
    band = (qidx[:, :, None] - keys[:, None, :]).abs() <= w             # [blocks, b, K]
    inside = (keys <= last)[None, :, None, :]
    allowed = band[None] & inside & valid[:, kidx][:, :, None, :]       # [B, blocks, b, K]
    bias = ((~allowed).to(dtype) * MASK_VALUE)[:, None]
    return {"qidx": qidx, "kidx": kidx, "bias": bias, "length": last + 1}


def _prepare(*, attention_mask=None, batch_size=None, q_length=None, config=None, local_size=None,
             dtype=None, device=None, **_):
    """Mask interface: the padding inputs for the layers of one type (sliding when ``local_size`` is given)."""
    import torch

    dtype = dtype or torch.float32
    valid = _valid(attention_mask, batch_size, q_length, device)
    if local_size is not None and getattr(config, "sliding_window", None):
        return Prepared(valid, **_sliding_inputs(valid, config.sliding_window, dtype))
    return Prepared(valid, **_global_inputs(valid, config.num_attention_heads, dtype))


_FUNCTIONS: dict[tuple, type] = {}


def const(g, values, dtype=None):
    import torch

    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


def set_type(out, like, rank: int) -> None:
    """Best-effort output type for the exporter's shape inference (dtype of ``like``, given rank)."""
    try:
        out.setType(like.type().with_sizes([None] * rank))
    except Exception:  # noqa: BLE001 - type info is optional; ONNX shape inference fills it in
        pass


def _global_function(num_heads: int, scaling: float):
    """Global attention as an autograd Function: torch math in ``forward``, one MultiHeadAttention in ONNX.

    Parameters are class constants: the tracer passes only tensors to ``symbolic``.
    """
    import torch

    key = ("global", num_heads, scaling)
    if key not in _FUNCTIONS:
        class GlobalAttention(torch.autograd.Function):
            """[B, H, S, D] q, k, v and [B, S, H, 1] ones/bias → [B, S, H·D]."""

            @staticmethod
            def forward(ctx, query, key, value, ones, bias):  # noqa: ARG004 - inference only
                scores = (query @ key.transpose(2, 3)) * scaling + bias[..., 0].permute(0, 2, 1)[:, :, None, :]
                out = torch.softmax(scores, dim=-1) @ value
                return out.transpose(1, 2).flatten(2)

            @staticmethod
            def symbolic(g, query, key, value, ones, bias):
                bshd = [0, 2, 1, 3]
                flat = const(g, [0, 0, -1], torch.int64)
                q = g.op("Mul", g.op("Transpose", query, perm_i=bshd), const(g, scaling, torch.float32))
                q = g.op("Reshape", g.op("Concat", q, ones, axis_i=-1), flat)
                k = g.op("Reshape", g.op("Concat", g.op("Transpose", key, perm_i=bshd), bias, axis_i=-1), flat)
                v = g.op("Reshape", g.op("Transpose", value, perm_i=bshd), flat)
                out = g.op(f"{MS_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=num_heads, scale_f=1.0)
                set_type(out, value, 3)
                return out

        _FUNCTIONS[key] = GlobalAttention
    return _FUNCTIONS[key]


def _sliding_function(num_heads: int, head_dim: int, scaling: float):
    """Sliding-window attention as an autograd Function; in ONNX: three Gathers and the block attention."""
    import torch

    key = ("sliding", num_heads, head_dim, scaling)
    if key not in _FUNCTIONS:
        class SlidingAttention(torch.autograd.Function):
            """[B, H, S, D] q, k, v + the shared indices/bias of ``_sliding_inputs`` → [B, S, H·D]."""

            @staticmethod
            def forward(ctx, query, key, value, qidx, kidx, bias, length):  # noqa: ARG004 - inference only
                q, k, v = query[:, :, qidx], key[:, :, kidx], value[:, :, kidx]  # [B, H, blocks, w|3w, D]
                scores = (q @ k.transpose(-1, -2)) * scaling + bias
                out = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 3, 1, 4).flatten(1, 2).flatten(2)
                with warnings.catch_warnings():  # under the ONNX tracer ``symbolic`` replaces this body
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    return out[:, : int(length[0])]

            @staticmethod
            def symbolic(g, query, key, value, qidx, kidx, bias, length):
                q = g.op("Gather", query, qidx, axis_i=2)
                k = g.op("Gather", key, kidx, axis_i=2)
                v = g.op("Gather", value, kidx, axis_i=2)
                scores = g.op("MatMul", q, g.op("Transpose", k, perm_i=[0, 1, 2, 4, 3]))
                scores = g.op("Add", g.op("Mul", scores, const(g, scaling, torch.float32)), bias)
                out = g.op("MatMul", g.op("Softmax", scores, axis_i=-1), v)         # [B, H, blocks, w, D]
                out = g.op("Transpose", out, perm_i=[0, 2, 3, 1, 4])                 # [B, blocks, w, H, D]
                out = g.op("Reshape", out, const(g, [0, -1, num_heads * head_dim], torch.int64))
                out = g.op("Slice", out, const(g, [0], torch.int64), length, const(g, [1], torch.int64))
                set_type(out, value, 3)
                return out

        _FUNCTIONS[key] = SlidingAttention
    return _FUNCTIONS[key]


def attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **_):
    """transformers attention interface; ``attention_mask`` is a ``Prepared`` (or a 2D padding mask / None).

    Returns [B, S, H·D] (ModernBERT reshapes the output to [B, S, hidden] either way).
    """
    config = module.config
    heads, head_dim = int(config.num_attention_heads), int(query.shape[-1])
    sliding = getattr(module, "sliding_window", None) is not None and bool(getattr(config, "sliding_window", None))
    prepared = attention_mask
    if not isinstance(prepared, Prepared):
        b, _, s, _ = query.shape
        prepared = Prepared(_valid(attention_mask, b, s, query.device))
    if sliding:
        t = prepared.tensors if "qidx" in prepared.tensors else \
            _sliding_inputs(prepared.valid, config.sliding_window, query.dtype)
        fn = _sliding_function(heads, head_dim, float(scaling))
        out = fn.apply(query, key, value, t["qidx"], t["kidx"], t["bias"], t["length"])
    else:
        t = prepared.tensors if "ones" in prepared.tensors else \
            _global_inputs(prepared.valid, heads, query.dtype)
        out = _global_function(heads, float(scaling)).apply(query, key, value, t["ones"], t["bias"])
    return out, None


def register() -> None:
    """Make ``NAME`` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, _prepare)


def supported(model) -> bool:
    """Whether ``model`` is exported with this attention (ModernBERT); other architectures keep eager."""
    return getattr(model.config, "model_type", None) == "modernbert"


@contextmanager
def blocked_attention(model) -> Iterator[bool]:
    """Within the block, ``model`` (a ModernBERT) runs this attention; yields whether it was switched."""
    if not supported(model):
        yield False
        return
    register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        model.set_attn_implementation(previous)
