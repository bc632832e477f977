"""Parity of every exported artifact against the torch reference (sentence-transformers on the source folder).

Each artifact runs through the runtime users get (granite_rt.Embedder / Reranker, so tokenization
and pooling are checked end to end) on a fixed probe set (several lengths and scripts; (query,
passage) pairs for a reranker) twice: every input alone, and all inputs in one padded batch. It is
compared with the reference, and alone-vs-batched shows whether a result depends on its neighbours.
fp32 must meet the bounds below or the export fails; fp16/INT8 deviations are recorded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from granite_rt.batching import MAX_BATCH_TOKENS
from granite_rt.devices import NotRecommendedWarning
from granite_rt.errors import ExportError, ParityError

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


def run_artifact(folder: Path, record: ArtifactRecord, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """Through the runtime (granite_rt) on CPU: (each probe alone, all probes in one padded batch)."""
    from granite_rt import Embedder, Reranker

    runtime_class = Reranker if info.kind == "reranker" else Embedder
    with warnings.catch_warnings():  # an INT8 the gate marked not recommended is verified all the same
        warnings.simplefilter("ignore", NotRecommendedWarning)
        model = runtime_class(folder, backend=record.backend, device="cpu", dtype=record.precision)
    model.batch_overhead_tokens = MAX_BATCH_TOKENS  # all probes in one padded batch, not cut by length
    if record.path not in model.info["files"]:
        raise ExportError(f"granite_rt loaded {model.info['files']} for {record.backend}/{record.precision}, "
                          f"not the artifact {record.path} being verified")
    if info.kind == "reranker":
        items: list = list(PROBE_PAIRS)

        def call(batch: list) -> np.ndarray:
            return model.predict(batch, batch_size=len(batch), activation="identity").reshape(len(batch), -1)
    else:
        items = list(PROBE_TEXTS)

        def call(batch: list) -> np.ndarray:
            return model.encode(batch, batch_size=len(batch), normalize=info.normalize)

    with warnings.catch_warnings():  # the long probes are truncated on purpose
        warnings.simplefilter("ignore", UserWarning)
        alone = np.concatenate([call([item]) for item in items]).astype(np.float64)
        return alone, call(items).astype(np.float64)


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


def verify(folder: Path, info: ModelInfo, records: list[ArtifactRecord], reference,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fill each record's parity, print the table, and raise ParityError if an fp32 artifact misses its bound."""
    expected = reference_outputs(reference, info)
    missed: list[str] = []
    for record in records:
        alone, batched = run_artifact(folder, record, info)
        record.parity = compare(expected, alone, batched, info)
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
        return f"{value:.7f}" if value > 0.5 else f"{value:.2e}"
    return "-" if value is None else str(value)
