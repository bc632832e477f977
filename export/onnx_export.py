"""torch → ONNX (fp32) with dynamic batch and sequence axes.

Uses ``torch.onnx.export``'s TorchScript exporter under the installed transformers, which
honours every key of transformers-5 configs (``rope_parameters``, ``layer_types``); measured
max |Δ| ≤ 1e-6 against eager torch on ModernBERT, including sequences shorter and longer than
the sliding window and padded rows. ModernBERT is traced with the memory-bounded attention of
``attention.py`` (global layers as ``com.microsoft.MultiHeadAttention``, sliding-window layers in
blocks), so a 32k-token input needs memory linear in its length; its rotary embedding and GLU are traced
as fused ops (``fusions.py``). BERT/XLM-R keep eager attention.
Every ONNX file is written by ``save_onnx``: weights in a page-aligned ``<file>_data`` beside the graph,
which onnxruntime memory-maps instead of copying. The traced graph's per-layer shape arithmetic is then
computed once per forward pass (``shapes.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from granite_rt.onnx_graph import EXTERNAL_DATA_ALIGNMENT, save_onnx  # noqa: F401 - re-exported

from .attention import MS_DOMAIN, blocked_attention
from .first_position import first_position_forward
from .fusions import fused_layers
from .shapes import share_shape_arithmetic

OPSET = 18


class _Graph:
    """Wraps a transformers model so the graph has named inputs and exactly one output (``first_position``:
    computed for what CLS pooling reads, first_position.py)."""

    def __new__(cls, model, input_names: Sequence[str], output_name: str, first_position: bool = False):
        import torch

        cone = first_position_forward(model, output_name) if first_position else None

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                inputs = dict(zip(input_names, tensors))
                if cone is not None:
                    return cone(inputs["input_ids"], inputs["attention_mask"])
                return getattr(self.model(**inputs), output_name)

        return Wrapped().eval()


def export_onnx(
    model,
    out_path: str | Path,
    input_names: Sequence[str],
    output_name: str,
    example_length: int = 16,
    first_position: bool = False,
) -> Path:
    """Export ``model`` to ``out_path``; ``output_name`` is ``last_hidden_state`` or ``logits``.

    ``first_position`` (a ModernBERT read by CLS pooling, ``first_position.applies``): only what position 0
    depends on is computed, and ``last_hidden_state`` is [batch, 1, hidden]."""
    import onnx
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = _Graph(model, list(input_names), output_name, first_position)
    # Two rows, one padded, so the traced graph takes the masked path.
    ids = torch.full((2, example_length), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, example_length // 2 :] = 0
    examples = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(examples[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    per_token = output_name == "last_hidden_state" and not first_position
    axes[output_name] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    # Traced into a scratch folder (a model over 2 GB comes out as one file per tensor), then re-saved.
    with torch.no_grad(), blocked_attention(model) as blocked, fused_layers(model) as fused, \
            tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        traced = Path(tmp) / out_path.name
        torch.onnx.export(
            graph, args, str(traced), input_names=list(input_names), output_names=[output_name],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            custom_opsets={MS_DOMAIN: 1} if blocked or fused else None,
        )
        save_onnx(onnx.load(str(traced)), out_path)
    graph = onnx.load(str(out_path), load_external_data=False)  # the graph alone: its weights stay in the _data file
    if share_shape_arithmetic(graph):
        onnx.save(graph, str(out_path))
    return out_path
