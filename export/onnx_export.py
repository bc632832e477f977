"""torch → ONNX (fp32) with dynamic batch and sequence axes.

Uses ``torch.onnx.export``'s TorchScript exporter under the installed transformers, which
honours every key of transformers-5 configs (``rope_parameters``, ``layer_types``); measured
max |Δ| ≤ 1e-6 against eager torch on ModernBERT, including sequences shorter and longer than
the sliding window and padded rows. ModernBERT is traced with the memory-bounded attention of
``attention.py`` (global layers as ``com.microsoft.MultiHeadAttention``, sliding-window layers in
blocks), so a 32k-token input needs memory linear in its length; BERT/XLM-R keep eager attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .attention import MS_DOMAIN, blocked_attention

OPSET = 18


class _Graph:
    """Wraps a transformers model so the graph has named inputs and exactly one output."""

    def __new__(cls, model, input_names: Sequence[str], output_name: str):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                out = self.model(**dict(zip(input_names, tensors)))
                return getattr(out, output_name)

        return Wrapped().eval()


def export_onnx(
    model,
    out_path: str | Path,
    input_names: Sequence[str],
    output_name: str,
    example_length: int = 16,
) -> Path:
    """Export ``model`` to ``out_path``; ``output_name`` is ``last_hidden_state`` or ``logits``."""
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = _Graph(model, list(input_names), output_name)
    # Two rows, one padded, so the traced graph takes the masked path.
    ids = torch.full((2, example_length), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, example_length // 2 :] = 0
    examples = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(examples[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output_name] = {0: "batch", 1: "sequence"} if output_name == "last_hidden_state" else {0: "batch"}
    with torch.no_grad(), blocked_attention(model) as blocked:
        torch.onnx.export(
            graph, args, str(out_path), input_names=list(input_names), output_names=[output_name],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            custom_opsets={MS_DOMAIN: 1} if blocked else None,
        )
    return out_path
