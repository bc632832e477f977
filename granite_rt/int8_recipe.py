"""The INT8 recipe of every model folder, from its fp32 ONNX graph (or OpenVINO IR): the export stage and
``granite-rt quantize`` both call it, so an INT8 file is the same whichever wrote it (onnx, onnxruntime,
openvino and nncf; no torch or transformers: ``pip install 'granite-rt[quantize]'``).

Both backends quantise statically, with scales calibrated on real text, so a text's vector does not depend
on the other texts in its batch (onnxruntime's dynamic quantisation computes activation scales over the
whole padded batch and fails that). Weights are per-channel; the classification head stays fp32, and so
do the outlier channels of the FFN down-projection, whose input carries the large activation outliers of
transformer encoders (``split_down_projections``: the 1 % of input channels with the largest calibrated
magnitude run through an fp32 MatMul of their own, the rest through INT8). The OpenVINO IR adds SmoothQuant
on every other MatMul (``smooth_quant``), and where that IR misses the INT8 gate it is written again with
whole fp32 down-projections and NNCF's SmoothQuant (``quantize_again_unsplit``).
The token-embedding table (for the 97m model 180,000 × 384, three quarters of the weights) is stored as
int8 with one fp32 scale per row in both INT8 artifacts: it is only gathered, never multiplied, so per-row
scales keep it within 0.4 % of each row's largest value and the file and resident memory shrink by ~4× for
that table. Calibration inputs are tokenized by the runtime's own
tokenizer (granite_rt.tokenize, token-for-token the reference's).
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import numpy as np

from granite_rt import backends
from granite_rt.batching import pad_batch
from granite_rt.errors import ExportError
from granite_rt.model_folder import load_spec
from granite_rt.onnx_graph import replace_node, save_onnx, unfuse_rotary
from granite_rt.tokenize import Tokenizer

CALIBRATION_DIR = Path(__file__).with_name("calibration")
INT8_PATHS = {f"{name}-int8": backends.get(name).file_names["int8"] for name in ("onnx", "openvino")}
# Calibration inputs are cut to this many tokens: activation ranges are reached long before 32k.
CALIBRATION_MAX_TOKENS = 256
DEFAULT_CALIBRATION_SAMPLES = 300
# FFN down-projections: BERT/XLM-R ".../output/dense" outside attention, ModernBERT "mlp/Wo".
DOWN_PROJECTIONS = r"(mlp/Wo/|(?<!attention)/output/dense/)"
# MatMuls kept fp32: the FFN down-projections (where they are split only their outlier channels, below) and
# classification heads. Measured on MiniLM (docs/export.md): with them in INT8 the worst probe's cosine to fp32
# drops from ~0.988 to ~0.969 (OpenVINO/NNCF).
HEADS = r"(/head/|/classifier/|/pooler/)"
FP32_MATMULS = rf"({DOWN_PROJECTIONS}|{HEADS})"
SDPA = "ScaledDotProductAttention"
# Both recipes split each FFN down-projection by input channel: this share of the channels (those
# with the largest calibrated |x|) stays fp32, the rest is INT8 (docs/export.md, measured 2026-12-02 on a 2-core
# Xeon with AVX-512 VNNI). all-MiniLM-L6-v2 against its fp32 ONNX on the gate's probe set: every down-projection
# INT8 mean cosine 0.9885 (fails the gate's 0.99), the top 1 % split off 0.9927 / p1 0.9781 (passes; whole
# down-projections fp32: 0.9931 / 0.9806), 3 % no better. The 97m shape then ran 8 × 512 tokens in 0.87x and a
# 32-token query in 0.83x the time of whole fp32 down-projections (all INT8: 0.86x / 0.76x).
OUTLIER_CHANNELS = 0.01
# Name suffix of the nodes that compute the outlier channels (kept fp32 by both recipes).
OUTLIER_SUFFIX = "/outlier_channels"
# SmoothQuant's migration strength in the OpenVINO recipe with split down-projections: NNCF's default for
# transformer MatMuls (AdvancedSmoothQuantParameters.matmul), computed as NNCF computes it (``smooth_quant``).
SMOOTH_QUANT_ALPHA = 0.95
# Ops that act on each channel on its own (per-channel or scalar constants), between an FFN's up-projection
# MatMuls and its down-projection: bias, activation, GLU gate. Only such a branch is split.
CHANNELWISE = frozenset({"Add", "Sub", "Mul", "Div", "Erf", "Sigmoid", "Tanh", "Relu", "Gelu", "FastGelu",
                         "QuickGelu", "BiasGelu", "Pow", "Neg", "Sqrt", "Exp", "Softplus", "Identity"})


@dataclass(frozen=True)
class Calibration:
    """Texts the INT8 scales are calibrated on, and where they came from."""

    texts: list[str]
    source: str


def read_calibration_file(path: str | Path) -> Calibration:
    """``--calibration FILE``: UTF-8, one text per line, at least 8 non-empty lines."""
    file = Path(path).expanduser()
    try:
        texts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--calibration {file}: cannot read it as UTF-8 text ({err})") from None
    if len(texts) < 8:
        raise ValueError(f"--calibration {file}: {len(texts)} non-empty lines; give at least 8 texts, one per line")
    return Calibration(texts=texts, source=str(file))


def load_calibration(path: str | Path | None, source: str, vocab_size: int) -> Calibration:
    """``--calibration FILE`` or the shipped set: multilingual for multilingual models (``source`` names one,
    or the vocabulary has ≥ 100k entries), else English."""
    if path is not None:
        return read_calibration_file(path)
    multilingual = "multilingual" in source.lower() or vocab_size >= 100_000
    name = "multilingual.txt" if multilingual else "english.txt"
    texts = (CALIBRATION_DIR / name).read_text(encoding="utf-8").splitlines()
    return Calibration(texts=[t for t in texts if t.strip()], source=f"granite_rt/calibration/{name}")


def calibration_feeds(calibration: Calibration, folder: Path, inputs: list[str],
                      samples: int) -> list[dict[str, np.ndarray]]:
    """One tokenized input per calibration text (embedder) or per (query, passage) pair (reranker), tokenized
    as the runtime tokenizes for the model folder ``folder`` and cut to CALIBRATION_MAX_TOKENS."""
    spec = load_spec(folder)
    tokenizer = Tokenizer.for_spec(folder, spec, min(spec.max_length, CALIBRATION_MAX_TOKENS))
    texts = calibration.texts[:samples]
    feeds = []
    for i, text in enumerate(texts):
        if spec.kind == "reranker":
            # Half the pairs match (query = the passage's opening words), half do not.
            passage = text if i % 2 == 0 else texts[(i + len(texts) // 2) % len(texts)]
            encodings = tokenizer.encode_pairs([(" ".join(text.split()[:8]), passage)])
        else:
            encodings = tokenizer.encode([text])
        batch = pad_batch(encodings, tokenizer.pad_id)
        feeds.append({name: np.ascontiguousarray(batch[name]) for name in inputs})
    return feeds


def graph_inputs(onnx_path: Path) -> list[str]:
    """The input names of an ONNX graph, in order (its weights are not read)."""
    import onnx

    return [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]


def _quantizable_matmuls(model, int8_down_projections: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """(MatMul/Gemm nodes with a constant weight to quantise, those kept fp32 by the outlier rule: FP32_MATMULS
    except the split down-projections' INT8 channels ``int8_down_projections``, and every outlier-channel node)."""
    initializers = {init.name for init in model.graph.initializer}
    weighted = [n.name for n in model.graph.node
                if n.op_type in ("MatMul", "Gemm") and any(i in initializers for i in n.input)]
    kept = [n for n in weighted if n not in int8_down_projections
            and (re.search(FP32_MATMULS, n) or n.endswith(OUTLIER_SUFFIX))]
    return [n for n in weighted if n not in kept], kept


@dataclass(frozen=True)
class _Branch:
    """An FFN between its up-projection MatMul(s) and its down-projection, with only CHANNELWISE ops between."""

    down: Any
    ups: tuple[Any, ...]
    inner: tuple[Any, ...]          # the channelwise nodes, in graph order
    per_channel: tuple[str, ...]    # their constant inputs with one value per channel (biases)
    channels: int


def _ffn_branch(graph, down, initializers: dict, producer: dict, consumers: dict) -> _Branch | None:
    """The FFN branch ending in ``down``, or None where the graph has another shape there (a fused or sliced
    up-projection, a tensor used outside the branch): that down-projection then stays fp32 whole."""
    from onnx import numpy_helper

    weight = initializers.get(down.input[1])
    if weight is None or len(weight.dims) != 2:
        return None
    channels = int(weight.dims[0])
    ups, inner, per_channel, stack, seen = [], [], [], [down.input[0]], set()
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = producer.get(tensor)
        if node is None:
            return None                                     # a graph input feeds the branch
        if node.op_type == "MatMul" and node.input[1] in initializers:
            if list(initializers[node.input[1]].dims)[-1] != channels:
                return None
            ups.append(node)
            continue
        if node.op_type == "Constant":
            if numpy_helper.to_array(node.attribute[0].t).size != 1:
                return None
            continue
        if node.op_type not in CHANNELWISE:
            return None
        inner.append(node)
        for name in node.input:
            if name in initializers:
                dims = list(initializers[name].dims)
                if int(np.prod(dims)) == channels and dims and dims[-1] == channels:
                    per_channel.append(name)
                elif int(np.prod(dims)) != 1:
                    return None
            elif name:
                stack.append(name)
    members = {id(n) for n in inner} | {id(down)}
    outputs = {o.name for o in graph.output}
    for node in ups + inner:
        if any(o in outputs or any(id(c) not in members for c in consumers.get(o, ())) for o in node.output):
            return None
    if not ups or any(len(consumers.get(n.input[1], ())) != 1 for n in ups + [down]) \
            or any(any(id(c) not in members for c in consumers.get(n, ())) for n in per_channel):
        return None
    order = {id(n): i for i, n in enumerate(graph.node)}
    return _Branch(down, tuple(ups), tuple(sorted(inner, key=lambda n: order[id(n)])), tuple(dict.fromkeys(per_channel)),
                   channels)


def channel_maxima(model, tensors: Collection[str], feeds: list[dict[str, np.ndarray]], workdir: Path) -> dict[str, np.ndarray]:
    """Per channel (last axis), the largest |x| each of ``tensors`` reaches on ``feeds``: one fp32 onnxruntime
    pass over the calibration set for all of them. ``workdir`` holds the pass's copy of ``model``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    tensors = list(dict.fromkeys(tensors))
    extra = [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors]
    model.graph.output.extend(extra)
    path = save_onnx(model, workdir / "channel_maxima.onnx")   # moves model's weights there as external data
    del model.graph.output[len(model.graph.output) - len(extra):]
    onnx.load_external_data_for_model(model, str(workdir))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed)):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = np.maximum(maxima[name], peak) if name in maxima else peak
    return maxima


def _split_initializer(graph, initializer, keep: np.ndarray, move: np.ndarray, axis: int) -> str:
    """Leave ``keep`` of ``initializer`` along ``axis`` in place; add its ``move`` part as a new initializer and
    return that one's name."""
    from onnx import numpy_helper

    values, name = numpy_helper.to_array(initializer), initializer.name
    initializer.CopyFrom(numpy_helper.from_array(np.take(values, keep, axis=axis), name))
    graph.initializer.append(numpy_helper.from_array(np.take(values, move, axis=axis), name + OUTLIER_SUFFIX))
    return name + OUTLIER_SUFFIX


def down_projection_inputs(model) -> list[str]:
    """The input tensors of the FFN down-projections ``split_down_projections`` can split (their calibrated
    maxima pick the outlier channels)."""
    return [branch.down.input[0] for branch in _ffn_branches(model.graph)]


def _ffn_branches(graph) -> list[_Branch]:
    """Every down-projection's FFN branch of the shape ``_ffn_branch`` understands, in graph order."""
    initializers = {init.name: init for init in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    downs = [n for n in graph.node if n.op_type == "MatMul" and re.search(DOWN_PROJECTIONS, n.name)]
    return [b for b in (_ffn_branch(graph, d, initializers, producer, consumers) for d in downs) if b is not None]


def split_down_projections(model, feeds: list[dict[str, np.ndarray]], workdir: Path,
                           fraction: float = OUTLIER_CHANNELS,
                           maxima: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], int]:
    """Split every FFN down-projection of ``model`` (an onnx ModelProto, edited in place) by input channel.

    The ``fraction`` of channels with the largest |x| on ``feeds`` get their own up-projection columns,
    channelwise ops and down-projection rows (nodes named ``…OUTLIER_SUFFIX``, kept fp32); the others keep
    the original nodes with the remaining columns and rows, and the two down-projection halves are added. In
    fp32 the result equals the original graph up to summation order; no activation is copied (a split by
    ``Gather`` along the channel axis cost more than the INT8 products saved). Returns (the down-projection
    MatMuls now carrying only the INT8 channels, how many outlier channels in all). ``maxima``: the
    ``channel_maxima`` of ``down_projection_inputs(model)`` where the caller calibrated them with other tensors in
    one pass; else they are calibrated here, ``workdir`` holding the pass's copy of the graph."""
    from onnx import helper

    graph = model.graph
    branches = _ffn_branches(graph)
    if not branches:
        return [], 0
    if maxima is None:
        maxima = channel_maxima(model, [b.down.input[0] for b in branches], feeds, workdir)
    initializers = {init.name: init for init in graph.initializer}
    changed: set[str] = set()
    outliers = 0
    for branch in branches:
        order = np.argsort(-maxima[branch.down.input[0]], kind="stable")
        count = max(1, int(np.ceil(fraction * branch.channels)))
        keep, move = np.sort(order[count:]), np.sort(order[:count])
        outliers += count
        renamed: dict[str, str] = {}
        added = []
        def split(name: str, axis: int, keep=keep, move=move) -> str:
            return _split_initializer(graph, initializers[name], keep, move, axis)

        for up in branch.ups:   # columns of the up-projection weights
            renamed[up.output[0]] = up.output[0] + OUTLIER_SUFFIX
            added.append(helper.make_node("MatMul", [up.input[0], split(up.input[1], 1)], [renamed[up.output[0]]],
                                          name=up.name + OUTLIER_SUFFIX))
        sliced = {name: split(name, -1) for name in branch.per_channel}
        for node in branch.inner:
            clone = type(node)()
            clone.CopyFrom(node)
            clone.name = node.name + OUTLIER_SUFFIX
            clone.input[:] = [renamed.get(i, sliced.get(i, i)) for i in node.input]
            for o in node.output:
                renamed[o] = o + OUTLIER_SUFFIX
            clone.output[:] = [renamed[o] for o in node.output]
            added.append(clone)
        down, result = branch.down, branch.down.output[0]
        added.append(helper.make_node("MatMul", [renamed[down.input[0]], split(down.input[1], 0)],   # its rows
                                      [result + OUTLIER_SUFFIX], name=down.name + OUTLIER_SUFFIX))
        int8_part = type(down)()
        int8_part.CopyFrom(down)
        int8_part.output[:] = [result + "/int8_channels"]
        total = helper.make_node("Add", [int8_part.output[0], result + OUTLIER_SUFFIX], [result],
                                 name=down.name + "/channels_sum")
        replace_node(graph, down, [*added, int8_part, total])
        changed.update(o for n in branch.ups + branch.inner for o in n.output)
    stale = [v for v in graph.value_info if v.name in changed]   # their channel count changed
    for info in stale:
        graph.value_info.remove(info)
    return [b.down.name for b in branches], outliers


def smoothed_inputs(model, skip: Collection[str]) -> dict[str, list]:
    """The MatMul inputs ``smooth_quant`` smooths, each with the weighted MatMuls that read it: every weighted
    2-D MatMul but those named in ``skip``, the outlier-channel nodes and the heads. The down-projection split
    leaves this set as it is when ``skip`` names the down-projections (their inputs are the only ones it
    changes), so it can be calibrated on the graph before the split."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers and len(initializers[node.input[1]].dims) == 2 \
                and node.name not in skip and not node.name.endswith(OUTLIER_SUFFIX) and not re.search(HEADS, node.name):
            readers.setdefault(node.input[0], []).append(node)
    return readers


def smooth_quant(model, feeds: list[dict[str, np.ndarray]], workdir: Path, skip: Collection[str],
                 alpha: float = SMOOTH_QUANT_ALPHA, maxima: Mapping[str, np.ndarray] | None = None) -> int:
    """SmoothQuant (Xiao et al., 2023) on ``model`` (an onnx ModelProto, edited in place), computed as NNCF
    computes it, for every weighted MatMul but those named in ``skip``, the outlier-channel nodes and the heads.

    The MatMuls that read one tensor share one per-channel scale s (for each, the calibrated |x| maximum^α over
    its weight rows' |w| maximum^(1-α), clipped to [its 10th percentile, 100]; the flattest wins); the tensor
    is multiplied by 1/s on its way to them and their weight rows by s, so in fp32 the graph computes the same.
    NNCF sets SmoothQuant per op type only: on the split graph it also smooths the down-projections' INT8
    channels, whose outliers were split off, and that missed MiniLM's gate (p1 0.9663, docs/export.md).
    Returns how many tensors were smoothed. ``maxima``: the ``channel_maxima`` of ``smoothed_inputs(model, skip)``
    where the caller calibrated them with other tensors in one pass; else they are calibrated here, ``workdir``
    holding the pass's copy of the graph."""
    from onnx import helper, numpy_helper

    graph = model.graph
    readers = smoothed_inputs(model, skip)
    if not readers:
        return 0
    if maxima is None:
        maxima = channel_maxima(model, list(readers), feeds, workdir)
    initializers = {init.name: init for init in graph.initializer}
    eps = np.finfo(np.float32).eps
    position = {id(n): i for i, n in enumerate(graph.node)}
    smoothing = []
    for index, (tensor, nodes) in enumerate(readers.items()):
        activation = np.clip(maxima[tensor], 1e-5, None)
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        candidates = []
        for weight in weights:
            scale = activation ** alpha / (np.clip(np.abs(weight).max(axis=1), 1e-5, None) ** (1 - alpha) + eps)
            scale = np.clip(scale, np.quantile(scale, 0.1), 1e2)
            candidates.append((scale.min() / (scale.max() + eps), scale))
        scale = max(candidates, key=lambda c: c[0])[1].astype(np.float32)
        for node, weight in zip(nodes, weights):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        inverse, smoothed = f"{tensor}/smooth_quant_inverse_{index}", f"{tensor}/smooth_quant_{index}"
        graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
        smoothing.append((min(position[id(n)] for n in nodes),
                          helper.make_node("Mul", [tensor, inverse], [smoothed], name=f"{tensor}/smooth_quant_{index}")))
        for node in nodes:
            node.input[0] = smoothed
    for at, node in sorted(smoothing, key=lambda item: -item[0]):   # from the back: earlier positions stay valid
        graph.node.insert(at, node)
    return len(readers)


class _FeedReader:
    """onnxruntime's CalibrationDataReader over prepared feeds, reporting (done, total) to ``on_feed``."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], on_feed: Callable[[int, int], None] | None) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)
        self._total, self._done, self._on_feed = len(feeds), 0, on_feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        if feed is not None and self._on_feed is not None:
            self._done += 1
            self._on_feed(self._done, self._total)
        return feed


def compress_token_embeddings(model) -> int:
    """Store the Gather table fed by ``input_ids`` as int8 + per-row fp32 scales; returns the rows compressed.

    ``Gather(table, ids)`` becomes ``Cast(Gather(table_q, ids)) * Gather(scales, ids)`` with
    ``scale = max|row| / 127``: standard ops every backend runs, and no constant a converter could fold
    back into fp32 (the gathers depend on the input).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    tables = {init.name: init for init in graph.initializer
              if init.data_type == TensorProto.FLOAT and len(init.dims) == 2}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == "input_ids"]
    if len(gathers) != 1:
        raise ExportError(f"expected one token-embedding Gather on input_ids, found {len(gathers)}; "
                          "cannot compress the embedding table")
    gather = gathers[0]
    name = gather.input[0]
    table = numpy_helper.to_array(tables[name])
    scales = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scales[scales == 0] = 1.0
    quantized = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
    graph.initializer.remove(tables[name])
    graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                              numpy_helper.from_array(scales.astype(np.float32), f"{name}_scale")])
    ids, out = gather.input[1], gather.output[0]
    nodes = [
        helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=f"{gather.name}_int8"),
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_dequantized"], to=TensorProto.FLOAT,
                         name=f"{gather.name}_cast"),
        helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"{gather.name}_scale"),
        helper.make_node("Mul", [f"{out}_dequantized", f"{out}_scale"], [out], name=f"{gather.name}_mul"),
    ]
    replace_node(graph, gather, nodes)
    return int(table.shape[0])


def quantize_onnx(source: Path, target: Path, feeds: list[dict[str, np.ndarray]], calibration: Calibration,
                  on_feed: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Static INT8 (QDQ, per-channel int8 weights, uint8 activations with MinMax scales from calibration);
    returns the manifest's quantization record.

    Only MatMul inputs are quantised, outputs stay fp32: onnxruntime then fuses each MatMul with its
    DequantizeLinears into MatMulIntegerToFloat (int8 GEMM, scales applied on the way out), instead of
    re-quantising every output to uint8 and dequantising it again as the QOperator format does. The FFN
    down-projections are split first (``split_down_projections``): INT8 but for their outlier channels.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(source))
    with tempfile.TemporaryDirectory(prefix=".granite-rt-int8-", dir=target.parent) as work:
        int8_downs, outliers = split_down_projections(model, feeds, Path(work))
        quantized, kept = _quantizable_matmuls(model, int8_downs)
        staged = save_onnx(model, Path(work) / "split.onnx") if int8_downs else source
        del model
        quantize_static(
            str(staged), str(target), _FeedReader(feeds, on_feed), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=quantized,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
        )
    model = onnx.load(str(target))
    rows = compress_token_embeddings(model)
    save_onnx(model, target)
    return {
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ, MatMul outputs fp32", "weights": "int8 per-channel",
        "activations": "uint8 per-tensor, static MinMax", "quantized_matmuls": len(quantized),
        "fp32_matmuls": len(kept), "token_embeddings": f"int8, per-row fp32 scale ({rows} rows)",
        "down_projections": (f"{len(int8_downs)} split by input channel: {outliers} outlier channels fp32 "
                             f"({OUTLIER_CHANNELS:.0%} per layer, largest calibrated |x|), the rest int8"
                             if int8_downs else "fp32"),
        "calibration": calibration.source, "calibration_samples": len(feeds),
    }


def quantize_again_unsplit(backend: str, recommended: bool, quantization: dict[str, Any] | None) -> bool:
    """Whether an INT8 artifact is an OpenVINO IR with split down-projections that missed the INT8 gate: the
    export and ``granite-rt quantize`` then write it again with ``quantize_openvino(..., split=False)``."""
    return backend == "openvino" and not recommended and (quantization or {}).get("down_projections", "fp32") != "fp32"


def openvino_model(source: Path, compress_embeddings: bool = False):
    """The fp32 ONNX graph at ``source`` converted to OpenVINO as every IR of a model folder is: rotary
    embedding as plain ops (onnx_graph.unfuse_rotary), optionally the int8 token-embedding table; returns
    (ov.Model, the onnx graph, rows compressed)."""
    import onnx

    graph = onnx.load(str(source))
    model, rows = _to_openvino(graph, compress_embeddings)
    return model, graph, rows


def _to_openvino(graph, compress_embeddings: bool):
    """(ov.Model, rows compressed) of the onnx ModelProto ``graph`` (edited in place)."""
    import openvino as ov

    unfuse_rotary(graph)
    rows = compress_token_embeddings(graph) if compress_embeddings else 0
    return ov.convert_model(io.BytesIO(graph.SerializeToString())), rows


def quantize_openvino(source: Path, target: Path, feeds: list[dict[str, np.ndarray]], calibration: Calibration,
                      on_feed: Callable[[int, int], None] | None = None, split: bool = True) -> dict[str, Any]:
    """NNCF post-training INT8 (ModelType.TRANSFORMER) calibrated on real text, written as an IR at ``target``;
    ``source`` is the fp32 ONNX graph (converted as every IR is, token embeddings int8) or an fp32 IR (.xml).
    ``on_feed`` is not called: NNCF shows its own progress.

    With ``split`` (from an ONNX graph) the FFN down-projections are split as in the onnxruntime recipe and
    their INT8 channels quantised; SmoothQuant then runs here (``smooth_quant``) on every other MatMul, NNCF's
    own is off. Measured on the 97m shape (2-core Xeon, AVX-512 VNNI, docs/export.md): 8 × 512 tokens in
    0.83x and a 32-token query in 0.81x the time of whole fp32 down-projections. Random-weight checkpoints
    with planted outlier channels miss the gate with it (tests/test_int8_gate.py), so the callers quantise
    again with ``split=False`` (fp32 down-projections, NNCF's SmoothQuant everywhere) when it does."""
    import nncf
    import onnx
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    int8_downs: list[str] = []
    whole: list[str] = []   # down-projections of a shape split_down_projections leaves alone: fp32 whole
    outliers = smoothed = 0
    if source.suffix == ".xml":  # a folder with only the IR: its token-embedding table stays as it is
        model, rows = ov.Core().read_model(str(source)), 0
        blocked = any(op.get_type_name() == SDPA for op in model.get_ops())  # padding bias unknown: keep fp32
    else:
        graph = onnx.load(str(source))
        if split:
            downs = [n.name for n in graph.graph.node if n.op_type == "MatMul" and re.search(DOWN_PROJECTIONS, n.name)]
            splittable = down_projection_inputs(graph)
            with tempfile.TemporaryDirectory(prefix=".granite-rt-int8-", dir=target.parent) as work:
                # one calibration pass for the split and SmoothQuant (the split leaves SmoothQuant's inputs alone)
                maxima = (channel_maxima(graph, [*splittable, *smoothed_inputs(graph, skip=downs)], feeds, Path(work))
                          if splittable else {})
                int8_downs, outliers = split_down_projections(graph, feeds, Path(work), maxima=maxima)
                whole = [n for n in downs if n not in int8_downs]
                smoothed = smooth_quant(graph, feeds, Path(work), skip=downs, maxima=maxima) if int8_downs else 0
        model, rows = _to_openvino(graph, compress_embeddings=True)
        # ModernBERT's global attention (attention.py) carries the padding bias in an extra key channel: a
        # quantizer on its inputs, calibrated on unpadded texts, would clamp the bias away, so they stay fp32.
        blocked = any(n.op_type == "MultiHeadAttention" for n in graph.graph.node)
        del graph
    fp32 = rf"({re.escape(OUTLIER_SUFFIX)}|{HEADS})" if int8_downs else FP32_MATMULS
    kept = nncf.IgnoredScope(names=whole if int8_downs else [], patterns=[f".*{fp32}.*"],
                             types=[SDPA] if blocked else [], validate=False)
    advanced = (AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
                if int8_downs else None)   # -1: NNCF's SmoothQuant off, smooth_quant did it
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds), ignored_scope=kept, advanced_parameters=advanced)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return {
        "method": "nncf.quantize", "model_type": "TRANSFORMER", "preset": "mixed (NNCF default for transformers)",
        "fp32_matmuls": f"ignored_scope {fp32}" + (f" and {len(whole)} whole down-projections" if whole and int8_downs else ""),
        "down_projections": (f"{len(int8_downs)} split by input channel: {outliers} outlier channels fp32 "
                             f"({OUTLIER_CHANNELS:.0%} per layer, largest calibrated |x|), the rest int8"
                             + (f"; {len(whole)} of another shape fp32" if whole else "") if int8_downs else "fp32"),
        "smooth_quant": (f"granite-rt, alpha {SMOOTH_QUANT_ALPHA}, {smoothed} MatMul inputs (not the down-projections)"
                         if int8_downs else "NNCF, every MatMul"),
        **({"fp32_attention": f"{SDPA} inputs (global attention with the padding bias channel)"} if blocked else {}),
        "token_embeddings": f"int8, per-row fp32 scale ({rows} rows)" if rows else "fp32 (quantized from the IR)",
        "calibration": calibration.source, "calibration_samples": len(feeds),
    }