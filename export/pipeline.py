"""``export_model``: checkpoint → model folder (files, artifacts, verified parity, manifest), written atomically.

Everything is written into a staging folder next to ``out_dir`` and renamed into place only after
verification passed (the manifest is rewritten with the parity figures last), so a failed export
never leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from granite_rt import backends
from granite_rt.errors import OutputFolderError
from granite_rt.staging import staged_folder
from granite_rt.int8_gate import GateBounds, gate_artifacts, gate_table

from . import checkpoint as ckpt
from . import first_position, noise
from .manifest import (MANIFEST_NAME, ArtifactRecord, build_manifest, describe_embedder, describe_reranker,
                       graph_inputs, record_artifact, write_manifest)
from .onnx_export import export_onnx
from .progress import Progress
from .quantize import DEFAULT_CALIBRATION_SAMPLES

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "openvino", "openvino-int8")
FP32_ONNX = backends.get("onnx").file_names["fp32"]
# Source files never copied: weights of any framework and previously exported graphs.
_SKIP_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".gguf", ".ckpt"}
_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache", "coreml"}


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated format names in canonical order ("a,b" strings accepted)."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format {', '.join(map(repr, unknown))}; choose from {', '.join(FORMATS)}")
    if not names:
        raise ValueError(f"no format given; choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in names)


def export_model(
    source: str | Path,
    out_dir: str | Path,
    formats: str | Iterable[str] = ("onnx",),
    kind: str | None = None,
    calibration: str | Path | None = None,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    gate: GateBounds = GateBounds(),
) -> dict[str, Any]:
    """Export ``source`` (folder or Hub id) into ``out_dir`` in ``formats``, verify it, and return the manifest.

    ``log`` gets the status lines; ``progress`` shows the long steps (tracing, INT8 calibration) with
    elapsed time on stderr: None (default) when stderr is a terminal, False never (``--quiet``).
    """
    from transformers import AutoTokenizer

    from .verify import load_reference, verify

    wanted = parse_formats(formats)
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be ≥ 1, got {calibration_samples}")
    out = Path(out_dir).expanduser().resolve()
    _check_output(out)
    checkpoint = ckpt.inspect(str(source), kind)  # type: ignore[arg-type]
    log(f"exporting {checkpoint.source} ({checkpoint.architecture}, {checkpoint.kind}) → {out}")
    steps = Progress(progress)
    with noise.transformers_loading():
        reference = load_reference(checkpoint)
        model = ckpt.load_model(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.folder)
    inputs = graph_inputs(list(tokenizer.model_input_names), model)
    describe = describe_reranker if checkpoint.kind == "reranker" else describe_embedder
    info = describe(checkpoint, reference, inputs)
    info = dataclasses.replace(info, first_position_only=first_position.applies(model, info.kind, info.pooling))

    with staged_folder(out) as stage:
        copy_model_files(checkpoint.folder, stage)
        with steps.step(f"tracing torch → {FP32_ONNX}"), noise.torch_tracing():
            export_onnx(model, stage / FP32_ONNX, inputs, info.output, first_position=info.first_position_only)
        fp32 = record_artifact(stage, FP32_ONNX, "onnx", "fp32")
        records = [fp32] + _derived_formats(stage, wanted, info, checkpoint, tokenizer, calibration,
                                            calibration_samples, log, steps)
        write_manifest(stage, build_manifest(info, records, parity={}))
        gate_records(stage, info.kind, records, gate, log)
        records = _unsplit_if_missed(stage, records, info, checkpoint, tokenizer, calibration, calibration_samples,
                                     gate, log, steps)
        if "onnx" not in wanted:
            records.remove(fp32)
            for path in fp32.files:
                (stage / path).unlink()
            if not any((stage / "onnx").iterdir()):
                (stage / "onnx").rmdir()
        # The runtime verifies the folder as users will load it: through this manifest (kind, checksums).
        write_manifest(stage, build_manifest(info, records, parity={}))
        parity = verify(stage, info, records, reference, log=log)
        manifest = build_manifest(info, records, parity)
        write_manifest(stage, manifest)
    log(f"wrote {out / MANIFEST_NAME}")
    return manifest


def gate_records(folder: Path, kind: str, records: list[ArtifactRecord], bounds: GateBounds,
                 log: Callable[[str], None]) -> None:
    """Run the INT8 gate (granite_rt.int8_gate) on every INT8 record; mark those that miss it not recommended."""
    results = gate_artifacts(folder, kind, [r.artifact for r in records], bounds)
    if not results:
        return
    for record in records:
        if record.path in results:
            record.gate = results[record.path].to_manifest()
            record.recommended = results[record.path].recommended
    log(gate_table(results))


def _unsplit_if_missed(stage: Path, records: list[ArtifactRecord], info, checkpoint, tokenizer, calibration,
                       calibration_samples: int, gate: GateBounds, log: Callable[[str], None],
                       steps: Progress) -> list[ArtifactRecord]:
    """``records`` with the OpenVINO INT8 IR quantised again with fp32 down-projections and gated, where the
    one with split down-projections missed the gate (int8_recipe.quantize_openvino); the bounds that one
    missed stay in the new record's quantization."""
    from granite_rt.int8_recipe import quantize_again_unsplit

    missed = [r for r in records if r.precision == "int8" and quantize_again_unsplit(r.backend, r.recommended, r.quantization)]
    if not missed:
        return records
    from .quantize import convert

    log("  openvino-int8 missed the INT8 gate with split down-projections: quantizing it again with them fp32")
    again = convert(stage, FP32_ONNX, ["openvino-int8"], info, checkpoint, tokenizer, calibration, calibration_samples,
                    log, steps, openvino_split=False)
    again[0].quantization = {**(again[0].quantization or {}), "split_down_projections_missed": missed[0].gate["missed"]}
    records = [again[0] if r is missed[0] else r for r in records]
    write_manifest(stage, build_manifest(info, records, parity={}))
    gate_records(stage, info.kind, again + [r for r in records if r.precision == "fp32"], gate, log)
    return records


def not_recommended(manifest: dict[str, Any]) -> list[str]:
    """"PATH: missed bounds" of every artifact the INT8 gate marked not recommended."""
    return [f"{a['path']}: {'; '.join((a.get('gate') or {}).get('missed') or ['not recommended'])}"
            for a in manifest["artifacts"] if not a.get("recommended", True)]


def _derived_formats(stage: Path, wanted: tuple[str, ...], info, checkpoint, tokenizer, calibration,
                     calibration_samples: int, log: Callable[[str], None], steps: Progress) -> list[ArtifactRecord]:
    """fp16 / INT8 / OpenVINO artifacts converted from the fp32 ONNX graph."""
    derived = [f for f in wanted if f != "onnx"]
    if not derived:
        return []
    from .quantize import convert

    return convert(stage, FP32_ONNX, derived, info, checkpoint, tokenizer, calibration,
                   calibration_samples, log, steps)


def copy_model_files(source: Path, dest: Path) -> list[str]:
    """Copy config, tokenizer and sentence-transformers files (every non-weight file) keeping the layout."""
    copied = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if (path.is_dir() or rel.parts[0] in _SKIP_DIRS or path.suffix in _SKIP_SUFFIXES
                or rel.name == MANIFEST_NAME or rel.name.startswith(".")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(rel.as_posix())
    # Module folders without files (e.g. 2_Normalize) must exist for sentence-transformers to load the folder.
    for folder in source.iterdir():
        if folder.is_dir() and folder.name not in _SKIP_DIRS and not folder.name.startswith("."):
            (dest / folder.name).mkdir(exist_ok=True)
    return copied


def _check_output(out: Path) -> None:
    """Refuse an --out that is a file, that holds something other than a previous export, or cannot be written."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise OutputFolderError(
            f"--out {out} is not empty and is not a previous export (no {MANIFEST_NAME}); refusing to overwrite it")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".granite-export-probe-{uuid.uuid4().hex}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise OutputFolderError(f"--out {out}: cannot write into {parent} ({err.strerror or err})") from None
