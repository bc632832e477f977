"""Derived artifacts from the fp32 ONNX graph: ONNX fp16, OpenVINO IR fp32, and the two INT8 artifacts of
granite_rt.int8_recipe (the recipe ``granite-rt quantize`` runs too; measured, see docs/export.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from granite_rt import backends
from granite_rt.errors import ExportError
from granite_rt.int8_recipe import (DEFAULT_CALIBRATION_SAMPLES, calibration_feeds,  # noqa: F401 - re-exported
                                    compress_token_embeddings, load_calibration, openvino_model, quantize_onnx,
                                    quantize_openvino, read_calibration_file)
from granite_rt.onnx_graph import save_onnx

from . import noise
from .checkpoint import Checkpoint
from .manifest import ArtifactRecord, ModelInfo, record_artifact
from .progress import Progress

# Each derived format is one (backend, stored precision); its file is named as that backend names it.
FORMATS = {"onnx-fp16": ("onnx", "fp16"), "onnx-int8": ("onnx", "int8"),
           "openvino": ("openvino", "fp32"), "openvino-int8": ("openvino", "int8")}
PATHS = {fmt: backends.get(backend).file_names[precision] for fmt, (backend, precision) in FORMATS.items()}


def convert(stage: Path, fp32_onnx: str, formats: list[str], info: ModelInfo, checkpoint: Checkpoint, tokenizer,
            calibration_path, calibration_samples: int, log: Callable[[str], None],
            steps: Progress | None = None, openvino_split: bool = True) -> list[ArtifactRecord]:
    """Write each requested derived format into ``stage`` and return its records (``openvino_split``:
    int8_recipe.quantize_openvino's ``split``)."""
    source = stage / fp32_onnx
    steps = steps or Progress(False)
    feeds, calibration = [], None
    if any(f.endswith("-int8") for f in formats):
        calibration = load_calibration(calibration_path, checkpoint.source, len(tokenizer))
        feeds = calibration_feeds(calibration, stage, info.inputs, calibration_samples)
    records = []
    for fmt in formats:
        log(f"  {fmt} → {PATHS[fmt]}")
        target = stage / PATHS[fmt]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if fmt == "onnx-fp16":
                records.append(_onnx_fp16(source, target, stage))
            elif fmt == "openvino":
                records.append(_openvino(source, target, stage))
            elif fmt == "onnx-int8":
                with steps.step("calibrating and quantizing onnx-int8"), noise.onnxruntime_quantization():
                    record = quantize_onnx(source, target, feeds, calibration, on_feed=steps.count)
                records.append(record_artifact(stage, PATHS[fmt], "onnx", "int8", record))
            else:
                with noise.nncf_quantization(progress=steps.enabled):  # NNCF's own bars are its progress
                    record = quantize_openvino(source, target, feeds, calibration, split=openvino_split)
                records.append(record_artifact(stage, PATHS[fmt], "openvino", "int8", record))
        except (ExportError, ValueError):
            raise
        except Exception as err:  # converter internals: name the format that failed
            raise ExportError(f"{fmt}: conversion failed: {type(err).__name__}: {err}") from err
    return records


def _onnx_fp16(source: Path, target: Path, stage: Path) -> ArtifactRecord:
    """fp16 weights and compute; int64 inputs and the fp32 output keep their types (keep_io_types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    save_onnx(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, disable_shape_infer=False), target)
    return record_artifact(stage, target.relative_to(stage).as_posix(), "onnx", "fp16",
                           {"method": "onnxruntime.transformers.float16", "keep_io_types": True})


def _openvino(source: Path, target: Path, stage: Path) -> ArtifactRecord:
    """OpenVINO IR converted from the fp32 ONNX graph, weights kept fp32."""
    import openvino as ov

    ov.save_model(openvino_model(source)[0], str(target), compress_to_fp16=False)
    return record_artifact(stage, target.relative_to(stage).as_posix(), "openvino", "fp32", None)
