"""Derived artifacts from the fp32 ONNX graph: ONNX fp16, ONNX INT8, OpenVINO IR fp32 and OpenVINO INT8 (NNCF).

INT8 recipes (measured, see docs/export.md): both backends quantise statically, with scales
calibrated on real text, so a text's vector does not depend on the other texts in its batch
(onnxruntime's dynamic quantisation computes activation scales over the whole padded batch
and fails that). Weights are per-channel; the FFN down-projection and the classification head,
whose inputs carry the large activation outliers of transformer encoders, stay fp32.
The token-embedding table (for the 97m model 180,000 × 384, three quarters of the weights) is stored
as int8 with one fp32 scale per row in both INT8 artifacts: it is only gathered, never multiplied, so
per-row scales keep it within 0.4 % of each row's largest value and the file and resident memory
shrink by ~4× for that table.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from granite_rt import backends
from granite_rt.errors import ExportError

from . import noise
from .checkpoint import Checkpoint
from .manifest import ArtifactRecord, ModelInfo, record_artifact
from .fusions import replace_node, unfuse_rotary
from .onnx_export import save_onnx
from .progress import Progress

CALIBRATION_DIR = Path(__file__).parent / "calibration"
# Each derived format is one (backend, stored precision); its file is named as that backend names it.
FORMATS = {"onnx-fp16": ("onnx", "fp16"), "onnx-int8": ("onnx", "int8"),
           "openvino": ("openvino", "fp32"), "openvino-int8": ("openvino", "int8")}
PATHS = {fmt: backends.get(backend).file_names[precision] for fmt, (backend, precision) in FORMATS.items()}
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


def load_calibration(path: str | Path | None, checkpoint: Checkpoint, vocab_size: int) -> Calibration:
    """``--calibration FILE`` or the shipped set: multilingual for multilingual models, else English."""
    if path is not None:
        return read_calibration_file(path)
    multilingual = "multilingual" in checkpoint.source.lower() or vocab_size >= 100_000
    name = "multilingual.txt" if multilingual else "english.txt"
    texts = (CALIBRATION_DIR / name).read_text(encoding="utf-8").splitlines()
    return Calibration(texts=[t for t in texts if t.strip()], source=f"granite_export/calibration/{name}")


def calibration_feeds(calibration: Calibration, tokenizer, info: ModelInfo,
                      samples: int) -> list[dict[str, np.ndarray]]:
    """One tokenized input per calibration text (embedder) or per (query, passage) pair (reranker)."""
    texts = calibration.texts[:samples]
    max_length = min(info.max_seq_length, CALIBRATION_MAX_TOKENS)
    feeds = []
    for i, text in enumerate(texts):
        if info.kind == "reranker":
            # Half the pairs match (query = the passage's opening words), half do not.
            passage = text if i % 2 == 0 else texts[(i + len(texts) // 2) % len(texts)]
            args: tuple = ([" ".join(text.split()[:8])], [passage])
        else:
            args = ([text],)
        enc = tokenizer(*args, truncation="longest_first", max_length=max_length, return_tensors="np")
        feeds.append({name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in info.inputs})
    return feeds


def convert(stage: Path, fp32_onnx: str, formats: list[str], info: ModelInfo, checkpoint: Checkpoint, tokenizer,
            calibration_path, calibration_samples: int, log: Callable[[str], None],
            steps: Progress | None = None) -> list[ArtifactRecord]:
    """Write each requested derived format into ``stage`` and return its records."""
    source = stage / fp32_onnx
    steps = steps or Progress(False)
    feeds: list[dict[str, np.ndarray]] = []
    calibration = None
    if any(f.endswith("-int8") for f in formats):
        calibration = load_calibration(calibration_path, checkpoint, len(tokenizer))
        feeds = calibration_feeds(calibration, tokenizer, info, calibration_samples)
    records = []
    for fmt in formats:
        log(f"  {fmt} → {PATHS[fmt]}")
        target = stage / PATHS[fmt]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if fmt == "onnx-fp16":
                records.append(_onnx_fp16(source, target, stage))
            elif fmt == "onnx-int8":
                records.append(_onnx_int8(source, target, stage, feeds, calibration, steps))
            elif fmt == "openvino":
                records.append(_openvino(source, target, stage))
            else:
                records.append(_openvino_int8(source, target, stage, feeds, calibration, steps))
        except (ExportError, ValueError):
            raise
        except Exception as err:  # converter internals: name the format that failed
            raise ExportError(f"{fmt}: conversion failed: {type(err).__name__}: {err}") from err
    return records


def _rel(stage: Path, path: Path) -> str:
    return path.relative_to(stage).as_posix()


def _onnx_fp16(source: Path, target: Path, stage: Path) -> ArtifactRecord:
    """fp16 weights and compute; int64 inputs and the fp32 output keep their types (keep_io_types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    save_onnx(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, disable_shape_infer=False), target)
    return record_artifact(stage, _rel(stage, target), "onnx", "fp16",
                           {"method": "onnxruntime.transformers.float16", "keep_io_types": True})


def _quantizable_matmuls(model) -> tuple[list[str], list[str]]:
    """(MatMul/Gemm nodes with a constant weight to quantise, those kept fp32 by the outlier rule)."""
    initializers = {init.name for init in model.graph.initializer}
    weighted = [n.name for n in model.graph.node
                if n.op_type in ("MatMul", "Gemm") and any(i in initializers for i in n.input)]
    kept = [n for n in weighted if re.search(FP32_MATMULS, n)]
    return [n for n in weighted if n not in kept], kept


class _FeedReader:
    """onnxruntime's CalibrationDataReader over prepared feeds, counting them into ``steps``."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], steps: Progress) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)
        self._total, self._done, self._steps = len(feeds), 0, steps

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        if feed is not None:
            self._done += 1
            self._steps.count(self._done, self._total)
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


def _onnx_int8(source: Path, target: Path, stage: Path, feeds, calibration: Calibration,
               steps: Progress) -> ArtifactRecord:
    """Static INT8 (QDQ, per-channel int8 weights, uint8 activations with MinMax scales from calibration).

    Only MatMul inputs are quantised, outputs stay fp32: onnxruntime then fuses each MatMul with its
    DequantizeLinears into MatMulIntegerToFloat (int8 GEMM, scales applied on the way out), instead of
    re-quantising every output to uint8 and dequantising it again as the QOperator format does.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantized, kept = _quantizable_matmuls(onnx.load(str(source)))
    with steps.step("calibrating and quantizing onnx-int8"), noise.onnxruntime_quantization():
        quantize_static(
            str(source), str(target), _FeedReader(feeds, steps), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=quantized,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
        )
    model = onnx.load(str(target))
    rows = compress_token_embeddings(model)
    save_onnx(model, target)
    return record_artifact(stage, _rel(stage, target), "onnx", "int8", {
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ, MatMul outputs fp32", "weights": "int8 per-channel",
        "activations": "uint8 per-tensor, static MinMax", "quantized_matmuls": len(quantized),
        "fp32_matmuls": len(kept), "token_embeddings": f"int8, per-row fp32 scale ({rows} rows)",
        "calibration": calibration.source, "calibration_samples": len(feeds),
    })


def openvino_model(source: Path, compress_embeddings: bool = False):
    """The fp32 ONNX graph at ``source`` converted to OpenVINO as every IR of a model folder is: rotary
    embedding as plain ops (fusions.unfuse_rotary), optionally the int8 token-embedding table; returns
    (ov.Model, the onnx graph, rows compressed)."""
    import onnx
    import openvino as ov

    graph = onnx.load(str(source))
    unfuse_rotary(graph)
    rows = compress_token_embeddings(graph) if compress_embeddings else 0
    return ov.convert_model(io.BytesIO(graph.SerializeToString())), graph, rows


def _openvino(source: Path, target: Path, stage: Path) -> ArtifactRecord:
    """OpenVINO IR converted from the fp32 ONNX graph, weights kept fp32."""
    import openvino as ov

    ov.save_model(openvino_model(source)[0], str(target), compress_to_fp16=False)
    return record_artifact(stage, _rel(stage, target), "openvino", "fp32", None)


def _openvino_int8(source: Path, target: Path, stage: Path, feeds, calibration: Calibration,
                   steps: Progress) -> ArtifactRecord:
    """NNCF post-training INT8 (ModelType.TRANSFORMER) of the OpenVINO model, calibrated on real text."""
    import nncf
    import openvino as ov

    model, graph, rows = openvino_model(source, compress_embeddings=True)
    # ModernBERT's global attention (attention.py) carries the padding bias in an extra key channel: a
    # quantizer on its inputs, calibrated on unpadded texts, would clamp the bias away, so they stay fp32.
    blocked = any(n.op_type == "MultiHeadAttention" for n in graph.graph.node)
    kept = nncf.IgnoredScope(patterns=[f".*{FP32_MATMULS}.*"], types=[SDPA] if blocked else [], validate=False)
    with noise.nncf_quantization(progress=steps.enabled):  # NNCF's own bars are the calibration's progress
        quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(feeds), ignored_scope=kept)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return record_artifact(stage, _rel(stage, target), "openvino", "int8", {
        "method": "nncf.quantize", "model_type": "TRANSFORMER", "preset": "mixed (NNCF default for transformers)",
        "fp32_matmuls": f"FFN down-projection and head (ignored_scope {FP32_MATMULS})",
        **({"fp32_attention": f"{SDPA} inputs (global attention with the padding bias channel)"} if blocked else {}),
        "token_embeddings": f"int8, per-row fp32 scale ({rows} rows)",
        "calibration": calibration.source, "calibration_samples": len(feeds),
    })
