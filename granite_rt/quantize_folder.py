"""``granite-rt quantize FOLDER``: the batch-invariant static INT8 of granite_rt.int8_recipe for a folder you did not
export (IBM's Hub layout), from its fp32 ONNX graph (else its fp32 OpenVINO IR), gated by granite_rt.int8_gate
and recorded in the folder's manifest. Needs onnx, onnxruntime, openvino and nncf, not torch or transformers:
``pip install 'granite-rt[quantize]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from granite_rt.backends.base import Artifact
from granite_rt.errors import ModelFileError, OutputFolderError
from granite_rt.folder_manifest import artifact_entry, read_manifest, trusted_manifest, upsert_artifacts, write_manifest
from granite_rt.int8_gate import GateBounds, gate_artifacts, gate_table
from granite_rt.int8_recipe import (DEFAULT_CALIBRATION_SAMPLES, INT8_PATHS, calibration_feeds, graph_inputs,
                                    load_calibration, quantize_again_unsplit, quantize_onnx, quantize_openvino)
from granite_rt.model_folder import load_spec

FORMATS = tuple(INT8_PATHS)


def quantize_folder(folder: str | Path, formats: tuple[str, ...] = FORMATS, calibration: str | Path | None = None,
                    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES, gate: GateBounds = GateBounds(),
                    force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the INT8 artifacts of ``formats`` into ``folder``, gate them, and return the updated manifest."""
    folder = Path(folder).expanduser().resolve()
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"--formats: {unknown or 'none given'}; choose from {', '.join(FORMATS)}")
    spec = load_spec(folder)
    fp32 = {a.backend: a for a in reversed(spec.artifacts) if a.precision == "fp32"}
    if "onnx" not in fp32 and not ("openvino" in fp32 and formats == ("openvino-int8",)):
        have = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in spec.artifacts)
        raise ModelFileError(f"{folder}: granite-rt quantize needs the fp32 ONNX graph onnx/model.onnx "
                             f"(or, for openvino-int8 alone, an fp32 OpenVINO IR); the folder has: {have}")
    existing = [INT8_PATHS[f] for f in formats if (folder / INT8_PATHS[f]).exists()]
    if existing and not force:
        raise OutputFolderError(f"{', '.join(existing)} already exist in {folder}; pass --force to replace them")
    source_onnx = folder / fp32["onnx"].path if "onnx" in fp32 else None
    calib = load_calibration(calibration, str(folder), _vocab_size(folder))
    inputs = graph_inputs(source_onnx) if source_onnx else ["input_ids", "attention_mask"]
    feeds = calibration_feeds(calib, folder, inputs, calibration_samples)
    manifest = read_manifest(folder) or trusted_manifest(folder, "granite-rt quantize")
    entries = []
    for fmt in formats:
        target = folder / INT8_PATHS[fmt]
        target.parent.mkdir(parents=True, exist_ok=True)
        backend = fmt.split("-")[0]
        source = source_onnx if source_onnx is not None else folder / fp32["openvino"].path
        log(f"  {fmt} → {INT8_PATHS[fmt]} (from {source.relative_to(folder)})")
        record = (quantize_onnx if backend == "onnx" else quantize_openvino)(source, target, feeds, calib)
        entries.append(artifact_entry(folder, Artifact(INT8_PATHS[fmt], backend, "int8"),  # type: ignore[arg-type]
                                      quantization={**record, "written_by": "granite-rt quantize"}))
    _gate(folder, spec.kind, manifest, entries, list(fp32.values()), gate, log)
    for missed in [e for e in entries if quantize_again_unsplit(e["backend"], e["recommended"], e["quantization"])]:
        log("  openvino-int8 missed the INT8 gate with split down-projections: quantizing it again with them fp32")
        record = quantize_openvino(source_onnx, folder / missed["path"], feeds, calib, split=False)
        again = artifact_entry(folder, Artifact(missed["path"], "openvino", "int8"),
                               quantization={**record, "written_by": "granite-rt quantize",
                                             "split_down_projections_missed": missed["gate"]["missed"]})
        _gate(folder, spec.kind, manifest, [again], list(fp32.values()), gate, log)
    return manifest


def _gate(folder: Path, kind: str, manifest: dict[str, Any], entries: list[dict[str, Any]], fp32: list[Artifact],
          gate: GateBounds, log: Callable[[str], None]) -> None:
    """Write ``entries`` into the manifest, gate them against ``fp32``, and write their figures and verdicts."""
    write_manifest(folder, upsert_artifacts(manifest, entries))
    results = gate_artifacts(folder, kind, [Artifact(e["path"], e["backend"], "int8") for e in entries] + fp32, gate)
    for entry in entries:
        entry.update(recommended=results[entry["path"]].recommended, gate=results[entry["path"]].to_manifest())
    log(gate_table(results))
    write_manifest(folder, upsert_artifacts(manifest, entries))


def _vocab_size(folder: Path) -> int:
    import json

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return int(config.get("vocab_size") or 0)
