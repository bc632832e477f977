"""torch → ONNX (fp32) with dynamic batch and sequence axes.

Uses ``torch.onnx.export``'s TorchScript exporter under the installed transformers, which
honours every key of transformers-5 configs (``rope_parameters``, ``layer_types``); measured
max |Δ| ≤ 1e-6 against eager torch on ModernBERT, including sequences shorter and longer than
the sliding window and padded rows. ModernBERT is traced with the memory-bounded attention of
``attention.py`` (global layers as ``com.microsoft.MultiHeadAttention``, sliding-window layers in
blocks), so a 32k-token input needs memory linear in its length; its rotary embedding and GLU are traced
as fused ops (``fusions.py``). BERT/XLM-R keep eager attention.
Every ONNX file is written by ``save_onnx``: weights in a page-aligned ``<file>_data`` beside the graph,
which onnxruntime memory-maps instead of copying.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from .attention import MS_DOMAIN, blocked_attention
from .fusions import fused_layers

OPSET = 18
# Initializers of at least this many bytes go to the external data file, each at an offset that is a
# multiple of it: onnxruntime maps external data aligned to the allocation granularity (4 KiB pages on
# Linux, 64 KiB on Windows) straight from the file instead of reading a private copy, so a weight is
# resident only once and only where it is touched (the token-embedding table: the rows of seen tokens).
EXTERNAL_DATA_ALIGNMENT = 64 * 1024


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
    import onnx
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
    return out_path


def save_onnx(model, path: str | Path) -> Path:
    """Write ``model`` as ``path`` (graph) + ``path``_data (initializers ≥ 64 KiB, 64 KiB-aligned).

    Alignment is what lets onnxruntime memory-map the weights (see EXTERNAL_DATA_ALIGNMENT); onnx,
    onnxruntime and OpenVINO all read the standard external-data fields written here.
    """
    import onnx
    from onnx import TensorProto

    path = Path(path)
    data = path.with_name(path.name + "_data")
    with open(data, "wb") as out:
        for tensor in model.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                raise ValueError(f"{tensor.name}: external data not loaded; load the model with its data first")
            if len(tensor.raw_data) < EXTERNAL_DATA_ALIGNMENT:  # small (or typed-field) tensors stay inline
                continue
            offset = -(-out.tell() // EXTERNAL_DATA_ALIGNMENT) * EXTERNAL_DATA_ALIGNMENT
            out.write(bytes(offset - out.tell()))
            out.write(tensor.raw_data)
            fields = {"location": data.name, "offset": str(offset), "length": str(len(tensor.raw_data))}
            del tensor.external_data[:]
            for key, value in fields.items():
                tensor.external_data.add(key=key, value=value)
            tensor.data_location = TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
    if data.stat().st_size == 0:
        os.remove(data)
    onnx.save(model, str(path))
    return path
