"""The INT8 recipe of every model folder, from its fp32 ONNX graph (or OpenVINO IR): the export stage and
``granite-rt quantize`` both call it, so an INT8 file is the same whichever wrote it (onnx, onnxruntime,
openvino and nncf; no torch or transformers: ``pip install 'granite-rt[quantize]'``).

Both backends quantise statically, with scales calibrated on real text, so a text's vector does not depend
on the other texts in its batch (onnxruntime's dynamic quantisation computes activation scales over the
whole padded batch and fails that). Weights are per-channel; the FFN down-projection and the
classification head, whose inputs carry the large activation outliers of transformer encoders, stay
fp32. The token-embedding table (for the 97m model 180,000 × 384, three quarters of the weights) is
stored as int8 with one fp32 scale per row in both INT8 artifacts: it is only gathered, never
multiplied, so per-row scales keep it within 0.4 % of each row's largest value and the file and
resident memory shrink by ~4× for that table. Calibration inputs are tokenized by the runtime's own
tokenizer (granite_rt.tokenize, token-for-token the reference's).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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
# MatMuls kept fp32 in both INT8 recipes: FFN down-projection (BERT/XLM-R ".../output/dense" outside
# attention, ModernBERT "mlp/Wo") and classification heads. Measured on MiniLM (docs/export.md): with
# them in INT8 the worst probe's cosine to fp32 drops from ~0.988 to ~0.969 (OpenVINO/NNCF).
FP32_MATMULS = r"(mlp/Wo/|(?<!attention)/output/dense/|/head/|/classifier/|/pooler/)"
SDPA = "ScaledDotProductAttention"


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


def _quantizable_matmuls(model) -> tuple[list[str], list[str]]:
    """(MatMul/Gemm nodes with a constant weight to quantise, those kept fp32 by the outlier rule)."""
    initializers = {init.name for init in model.graph.initializer}
    weighted = [n.name for n in model.graph.node
                if n.op_type in ("MatMul", "Gemm") and any(i in initializers for i in n.input)]
    kept = [n for n in weighted if re.search(FP32_MATMULS, n)]
    return [n for n in weighted if n not in kept], kept


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
    re-quantising every output to uint8 and dequantising it again as the QOperator format does.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantized, kept = _quantizable_matmuls(onnx.load(str(source)))
    quantize_static(
        str(source), str(target), _FeedReader(feeds, on_feed), quant_format=QuantFormat.QDQ, per_channel=True,
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
        "calibration": calibration.source, "calibration_samples": len(feeds),
    }


def openvino_model(source: Path, compress_embeddings: bool = False):
    """The fp32 ONNX graph at ``source`` converted to OpenVINO as every IR of a model folder is: rotary
    embedding as plain ops (onnx_graph.unfuse_rotary), optionally the int8 token-embedding table; returns
    (ov.Model, the onnx graph, rows compressed)."""
    import onnx
    import openvino as ov

    graph = onnx.load(str(source))
    unfuse_rotary(graph)
    rows = compress_token_embeddings(graph) if compress_embeddings else 0
    return ov.convert_model(io.BytesIO(graph.SerializeToString())), graph, rows


def quantize_openvino(source: Path, target: Path, feeds: list[dict[str, np.ndarray]], calibration: Calibration,
                      on_feed: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """NNCF post-training INT8 (ModelType.TRANSFORMER) calibrated on real text, written as an IR at ``target``;
    ``source`` is the fp32 ONNX graph (converted as every IR is, token embeddings int8) or an fp32 IR (.xml).
    ``on_feed`` is not called: NNCF shows its own progress."""
    import nncf
    import openvino as ov

    if source.suffix == ".xml":  # a folder with only the IR: its token-embedding table stays as it is
        model, rows = ov.Core().read_model(str(source)), 0
        blocked = any(op.get_type_name() == SDPA for op in model.get_ops())  # padding bias unknown: keep fp32
    else:
        model, graph, rows = openvino_model(source, compress_embeddings=True)
        # ModernBERT's global attention (attention.py) carries the padding bias in an extra key channel: a
        # quantizer on its inputs, calibrated on unpadded texts, would clamp the bias away, so they stay fp32.
        blocked = any(n.op_type == "MultiHeadAttention" for n in graph.graph.node)
    kept = nncf.IgnoredScope(patterns=[f".*{FP32_MATMULS}.*"], types=[SDPA] if blocked else [], validate=False)
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds), ignored_scope=kept)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return {
        "method": "nncf.quantize", "model_type": "TRANSFORMER", "preset": "mixed (NNCF default for transformers)",
        "fp32_matmuls": f"FFN down-projection and head (ignored_scope {FP32_MATMULS})",
        **({"fp32_attention": f"{SDPA} inputs (global attention with the padding bias channel)"} if blocked else {}),
        "token_embeddings": f"int8, per-row fp32 scale ({rows} rows)" if rows else "fp32 (quantized from the IR)",
        "calibration": calibration.source, "calibration_samples": len(feeds),
    }
