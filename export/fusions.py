"""ModernBERT layers traced as fewer, larger ONNX ops (same math; exported results equal eager torch).

Profiled on the 97m shape (8 × 512 tokens, INT8, onnxruntime, 2 cores), ~13 % of the time went to
copies around the matrix products: the two ``Slice``s that cut the GLU's ``Wi`` output into input and
gate, and the ``Slice``/``Neg``/``Concat``/``Mul``/``Add`` of ``rotate_half`` on every query and key. For
the export (``fused_layers``):

- **GLU up-projection as two MatMuls** (the first and second half of ``Wi``'s weight), so each product is
  written where it is used instead of into one tensor that is then sliced in two;
- **rotary embedding as ``com.microsoft.RotaryEmbedding``** (onnxruntime's CPU/CUDA/DirectML kernel). Its caches
  are the ``cos``/``sin`` the model computes (first half of the head dimension, which ``rotate_half`` repeats),
  with one position id per token. OpenVINO gets the plain-op form back (``unfuse_rotary``): its conversion of
  the node misreads the one-element position form, and a model compiled from the per-token form and loaded
  from OpenVINO's model cache returned NaN rows (OpenVINO 2026.4, CPU).

Measured (random-weight Granite shapes, INT8, onnxruntime, 2-core AMD EPYC, interleaved medians, the
graphs before and after): 97m embedder 8 × 514 tokens 1854 → 1673 ms (−10 %), reranker 20 × 274 tokens
7619 → 7134 ms (−6 %), a 32-token query unchanged (16.3 ms). The fp32 graph equals the unfused one within 1e-6.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from types import MethodType
from typing import Iterator

from granite_rt.onnx_graph import replace_node, unfuse_rotary  # noqa: F401 - re-exported

from .attention import MS_DOMAIN, const, set_type, supported

_FUNCTIONS: dict[int, type] = {}


def _rotary_function(head_dim: int):
    """Rotary embedding of query and key as an autograd Function: torch math in ``forward``, two
    ``RotaryEmbedding`` nodes sharing caches and position ids in ONNX. ``head_dim`` is a class constant
    (the tracer passes only tensors to ``symbolic``)."""
    import torch
    from transformers.models.modernbert.modeling_modernbert import rotate_half

    if head_dim not in _FUNCTIONS:
        class Rotary(torch.autograd.Function):
            """[B, H, S, D] query and key, [1, S, D] cos and sin → rotated query and key."""

            @staticmethod
            def forward(ctx, query, key, cos, sin):  # noqa: ARG004 - inference only
                cos, sin = cos[:, None], sin[:, None]
                return query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin

            @staticmethod
            def symbolic(g, query, key, cos, sin):
                first, half = const(g, [0], torch.int64), const(g, [head_dim // 2], torch.int64)
                axis = const(g, [1], torch.int64)
                caches = [g.op("Slice", g.op("Squeeze", t, first), first, half, axis) for t in (cos, sin)]
                shape = g.op("Shape", query)                                      # [B, H, S, D]
                batch = g.op("Slice", shape, first, axis)
                length = g.op("Slice", shape, const(g, [2], torch.int64), const(g, [3], torch.int64))
                positions = g.op("Range", const(g, 0, torch.int64), g.op("Squeeze", length, first),
                                 const(g, 1, torch.int64))
                positions = g.op("Expand", g.op("Unsqueeze", positions, first), g.op("Concat", batch, length, axis_i=0))
                outs = [g.op(f"{MS_DOMAIN}::RotaryEmbedding", t, positions, *caches, interleaved_i=0)
                        for t in (query, key)]
                for out in outs:
                    set_type(out, query, 4)
                return tuple(outs)

        _FUNCTIONS[head_dim] = Rotary
    return _FUNCTIONS[head_dim]


def _fused_rotary(original):
    """``apply_rotary_pos_emb`` that traces as ``RotaryEmbedding`` where the op computes exactly the same:
    4-D [B, H, S, D] query/key, rotation over the whole head, one row of positions; else ``original``."""
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        import torch

        with warnings.catch_warnings():  # shapes are fixed per model: the tracer may treat them as constants
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            fusable = (unsqueeze_dim == 1 and q.dim() == 4 and cos.dim() == 3 and cos.shape[0] == 1
                       and cos.shape[-1] == q.shape[-1] and q.dtype == cos.dtype)
            head_dim = int(q.shape[-1])
        if not fusable:
            return original(q, k, cos, sin, unsqueeze_dim)
        return _rotary_function(head_dim).apply(q, k, cos, sin)

    return apply_rotary_pos_emb


def _split_glu_forward(self, hidden_states):
    """``ModernBertMLP.forward`` with ``Wi`` applied as two products (input half, gate half)."""
    import torch.nn.functional as F

    size = self.Wo.in_features
    weight, bias = self.Wi.weight, self.Wi.bias
    value = F.linear(hidden_states, weight[:size], None if bias is None else bias[:size])
    gate = F.linear(hidden_states, weight[size:], None if bias is None else bias[size:])
    return self.Wo(self.drop(self.act(value) * gate))


@contextmanager
def fused_layers(model) -> Iterator[bool]:
    """Within the block, ``model`` (a ModernBERT) traces with the fused ops above; yields whether it does."""
    if not supported(model):
        yield False
        return
    from transformers.models.modernbert import modeling_modernbert as modeling

    mlps = [m for m in model.modules() if isinstance(m, modeling.ModernBertMLP)]
    original = modeling.apply_rotary_pos_emb
    modeling.apply_rotary_pos_emb = _fused_rotary(original)
    for mlp in mlps:
        mlp.forward = MethodType(_split_glu_forward, mlp)
    try:
        yield True
    finally:
        modeling.apply_rotary_pos_emb = original
        for mlp in mlps:
            del mlp.forward
