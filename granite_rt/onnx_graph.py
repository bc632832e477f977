"""ONNX graph edits shared by the export stage and ``granite-rt quantize`` (onnx only, no torch): writing a graph
with page-aligned external weights, replacing a node, and turning the fused rotary embedding back into plain ops.
"""

from __future__ import annotations

import os
from pathlib import Path

MS_DOMAIN = "com.microsoft"
# Initializers of at least this many bytes go to the external data file, each at an offset that is a
# multiple of it: onnxruntime maps external data aligned to the allocation granularity (4 KiB pages on
# Linux, 64 KiB on Windows) straight from the file instead of reading a private copy, so a weight is
# resident only once and only where it is touched (the token-embedding table: the rows of seen tokens).
EXTERNAL_DATA_ALIGNMENT = 64 * 1024


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


def unfuse_rotary(model) -> int:
    """Replace each ``RotaryEmbedding`` node of ``model`` (an onnx ModelProto) by the plain ops of
    ``x·cos + rotate_half(x)·sin``; returns how many. The position ids are dropped: ``_rotary_function``
    always feeds 0 … S−1, so the caches broadcast over the sequence as they are."""
    from onnx import helper

    graph = model.graph
    nodes = [n for n in graph.node if n.op_type == "RotaryEmbedding" and n.domain == MS_DOMAIN]
    for index, node in enumerate(nodes):
        x, _, cos_cache, sin_cache = node.input
        p = f"{node.name or node.output[0]}/unfused{index}/"
        ops = [
            helper.make_node("Concat", [cos_cache, cos_cache], [p + "cos"], axis=-1, name=p + "cos"),
            helper.make_node("Concat", [sin_cache, sin_cache], [p + "sin"], axis=-1, name=p + "sin"),
            helper.make_node("Split", [x], [p + "x1", p + "x2"], axis=-1, num_outputs=2, name=p + "split"),
            helper.make_node("Neg", [p + "x2"], [p + "neg"], name=p + "neg"),
            helper.make_node("Concat", [p + "neg", p + "x1"], [p + "rotated"], axis=-1, name=p + "rotate_half"),
            helper.make_node("Mul", [x, p + "cos"], [p + "x_cos"], name=p + "x_cos"),
            helper.make_node("Mul", [p + "rotated", p + "sin"], [p + "rotated_sin"], name=p + "rotated_sin"),
            helper.make_node("Add", [p + "x_cos", p + "rotated_sin"], [node.output[0]], name=p + "add"),
        ]
        replace_node(graph, node, ops)
    return len(nodes)


def replace_node(graph, node, replacements) -> None:
    """Put ``replacements`` (onnx NodeProtos) where ``node`` stands in ``graph``, keeping the topological order."""
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, op in enumerate(replacements):
        graph.node.insert(position + offset, op)
