"""Parity of every exported artifact against the torch reference (sentence-transformers on the source folder).

Each artifact runs a fixed probe set (several lengths and scripts; (query, passage) pairs for a
reranker) twice: every input alone, and all inputs in one padded batch. It is compared with the
reference, and alone-vs-batched shows whether a text's result depends on its neighbours.
fp32 must meet the bounds below or the export fails; fp16/INT8 deviations are recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from granite_rt.errors import ParityError

from .checkpoint import Checkpoint
from .manifest import ArtifactRecord, ModelInfo

MIN_COSINE_FP32 = 0.99999
MAX_LOGIT_DIFF_FP32 = 1e-3

_LONG = ("Boundary layer transition on a swept wing depends on the pressure gradient, the sweep angle and the "
         "free-stream turbulence level; experiments at supersonic speeds show crossflow instabilities. ")
PROBE_TEXTS: tuple[str, ...] = (
    "water",
    "What is the chemical formula of water?",
    "Water is a chemical substance with the chemical formula H2O; one molecule has two hydrogen atoms.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "東京は日本の首都です。人口は約1400万人です。",
    "Москва — столица России.",
    "北京是中国的首都。",
    _LONG * 3,
    _LONG * 40,  # longer than any tiny model's max length: exercises truncation
)
PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    ("what is the chemical formula of water?", "Water is a chemical substance with the chemical formula H2O."),
    ("what is the chemical formula of water?", "The Eiffel Tower is in Paris."),
    ("boundary layer transition", _LONG * 2),
    ("wie heißt die Hauptstadt von Deutschland?", "Berlin ist die Hauptstadt Deutschlands."),
    ("capital of Japan", "東京は日本の首都です。"),
    ("supersonic crossflow", _LONG * 40),
)


@dataclass(frozen=True)
class Probe:
    """Tokenized probes: every input alone, and all of them padded into one batch."""

    singles: list[dict[str, np.ndarray]]
    batch: dict[str, np.ndarray]


def load_reference(checkpoint: Checkpoint):
    """The sentence-transformers object users compare against: SentenceTransformer or CrossEncoder, on CPU."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if checkpoint.kind == "reranker":
        return CrossEncoder(str(checkpoint.folder), device="cpu")
    return SentenceTransformer(str(checkpoint.folder), device="cpu")


def reference_outputs(reference, info: ModelInfo) -> np.ndarray:
    """Embeddings (pooled, normalised as the model declares) or raw logits, from the torch reference."""
    import torch

    if info.kind == "reranker":
        logits = reference.predict(list(PROBE_PAIRS), activation_fn=torch.nn.Identity(), batch_size=64)
        return np.asarray(logits, dtype=np.float64).reshape(len(PROBE_PAIRS), -1)
    return np.asarray(reference.encode(list(PROBE_TEXTS), batch_size=64), dtype=np.float64)


def tokenize_probes(tokenizer, info: ModelInfo) -> Probe:
    """Tokenize as sentence-transformers does: truncation at max_seq_length, pad to the longest in the batch."""
    if info.kind == "reranker":
        args: tuple = ([q for q, _ in PROBE_PAIRS], [p for _, p in PROBE_PAIRS])
    else:
        args = (list(PROBE_TEXTS),)

    def encode(*columns: Sequence[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(*columns, padding=True, truncation="longest_first", max_length=info.max_seq_length,
                        return_tensors="np")
        return {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in info.inputs}

    singles = [encode(*([column[i]] for column in args)) for i in range(len(args[0]))]
    return Probe(singles=singles, batch=encode(*args))


def pool(hidden: np.ndarray, mask: np.ndarray, info: ModelInfo) -> np.ndarray:
    """sentence-transformers' Pooling (+ Normalize) on a last_hidden_state batch."""
    hidden = hidden.astype(np.float64)
    weights = mask[..., None].astype(np.float64)
    if info.pooling == "cls":
        out = hidden[:, 0]
    elif info.pooling == "mean":
        out = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    else:
        out = np.where(weights > 0, hidden, -1e9).max(1)
    if info.normalize:
        out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
    return out


def _session(folder: Path, record: ArtifactRecord) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Run one artifact on CPU in full precision of its own graph (no bf16 down-casting by OpenVINO)."""
    path = folder / record.path
    if record.backend == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feed: session.run(None, feed)[0]
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feed: compiled(feed)[0]


def run_artifact(run: Callable[[dict[str, np.ndarray]], np.ndarray], probe: Probe,
                 info: ModelInfo) -> tuple[np.ndarray, np.ndarray, float]:
    """(outputs alone, outputs batched, median seconds per batched call) in the reference's output space."""

    def finish(feed: dict[str, np.ndarray]) -> np.ndarray:
        out = np.asarray(run(feed), dtype=np.float64)
        return out.reshape(len(out), -1) if info.kind == "reranker" else pool(out, feed["attention_mask"], info)

    alone = np.concatenate([finish(feed) for feed in probe.singles])
    batched = finish(probe.batch)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        run(probe.batch)
        timings.append(time.perf_counter() - start)
    return alone, batched, float(np.median(timings))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)


def compare(reference: np.ndarray, alone: np.ndarray, batched: np.ndarray, info: ModelInfo) -> dict[str, float]:
    """Worst-case deviation from the reference (alone and batched) and between alone and batched."""
    if info.kind == "reranker":
        return {
            "max_abs_logit_diff": float(max(np.abs(alone - reference).max(), np.abs(batched - reference).max())),
            "padding_max_abs_logit_diff": float(np.abs(alone - batched).max()),
        }
    return {
        "min_cosine": float(min(_cosines(alone, reference).min(), _cosines(batched, reference).min())),
        "max_abs_diff": float(max(np.abs(alone - reference).max(), np.abs(batched - reference).max())),
        "padding_min_cosine": float(_cosines(alone, batched).min()),
    }


def failures(record: ArtifactRecord, parity: dict[str, float]) -> list[str]:
    """Bounds an fp32 artifact misses (reference parity and padding invariance); other precisions are only measured."""
    if record.precision != "fp32":
        return []
    missed = []
    if "min_cosine" in parity:
        for key in ("min_cosine", "padding_min_cosine"):
            if parity[key] < MIN_COSINE_FP32:
                missed.append(f"{key} {parity[key]:.7f} < {MIN_COSINE_FP32}")
    else:
        for key in ("max_abs_logit_diff", "padding_max_abs_logit_diff"):
            if parity[key] > MAX_LOGIT_DIFF_FP32:
                missed.append(f"{key} {parity[key]:.2e} > {MAX_LOGIT_DIFF_FP32}")
    return missed


def verify(folder: Path, info: ModelInfo, records: list[ArtifactRecord], reference, tokenizer,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fill each record's parity, print the table, and raise ParityError if an fp32 artifact misses its bound."""
    expected = reference_outputs(reference, info)
    probe = tokenize_probes(tokenizer, info)
    missed: list[str] = []
    for record in records:
        alone, batched, seconds = run_artifact(_session(folder, record), probe, info)
        record.parity = {**compare(expected, alone, batched, info), "probe_batch_ms": round(seconds * 1e3, 3)}
        missed += [f"{record.path}: {m}" for m in failures(record, record.parity)]
    log(parity_table(records))
    if missed:
        raise ParityError("export failed parity with the torch reference: " + "; ".join(missed))
    return {
        "reference": f"sentence-transformers {type(reference).__name__} (torch, CPU, fp32)",
        "probes": len(PROBE_PAIRS if info.kind == "reranker" else PROBE_TEXTS),
        "bounds": {"fp32_min_cosine": MIN_COSINE_FP32, "fp32_max_abs_logit_diff": MAX_LOGIT_DIFF_FP32},
    }


def parity_table(records: list[ArtifactRecord]) -> str:
    """A short fixed-width table of each artifact's parity figures."""
    keys = sorted({k for r in records for k in r.parity})
    rows = [["artifact", "precision", *keys]]
    for r in records:
        rows.append([r.path, r.precision, *(_fmt(r.parity.get(k)) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value > 1.0:
            return f"{value:.2f}"
        return f"{value:.7f}" if value > 0.5 else f"{value:.2e}"
    return "-" if value is None else str(value)
