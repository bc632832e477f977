"""Retrieval fidelity (``granite-rt eval``): run a collection through every artifact of a model folder
this machine can run and compare quality and outputs with the fp32 reference.

Embedder: nDCG@10, Recall@100, cosine of each vector to the reference vector (mean, 1st percentile,
min), top-10 Jaccard against the reference ranking, documents/s. Reranker: reranks the top-20 of
a retriever's fp32 ranking and reports the same ranking metrics plus Kendall τ of its scores
against the reference scores. The reference is sentence-transformers on torch (``reference=True``,
imported only then) or else the runtime's own fp32 artifact.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from granite_rt import host
from granite_rt.embedder import Embedder
from granite_rt.errors import GraniteRTError
from granite_rt.eval import metrics
from granite_rt.eval.collections import Collection, load_collection, subsample as subsample_collection
from granite_rt.eval.reference import ReferenceEmbedder, ReferenceReranker, reference_source
from granite_rt.model_folder import load_spec, resolve_model
from granite_rt.reranker import Reranker

# What "all runnable" tries on a CPU, in this order (fp32 first: it is the comparison baseline).
# openvino/int8+bf16 (the INT8 IR with a bf16 hint) is what dtype="auto" runs on CPUs with int8 dot products and BF16.
CPU_VARIANTS = ("onnx/fp32", "openvino/fp32", "onnx/int8", "openvino/int8", "openvino/bf16", "openvino/int8+bf16")
KNOWN_VARIANTS = CPU_VARIANTS + ("onnx/fp16", "openvino/fp16")
RERANK_DEPTH = 20
RANK_DEPTH = 100


@dataclass(frozen=True)
class Subsample:
    """Evaluate on ``queries`` random queries and a corpus of their relevant documents plus random others up to ``docs``."""

    queries: int | None = None
    docs: int | None = None
    seed: int = 0


@dataclass
class EvalRow:
    """One artifact at one compute precision (or the torch reference); metrics are None where they do not apply."""

    backend: str                     # onnx | openvino | sentence-transformers
    precision: str                   # compute precision: fp32 | bf16 | int8 | fp16
    artifact: str = ""               # file(s) that ran
    ndcg_at_10: float | None = None
    recall_at_100: float | None = None
    cosine_mean: float | None = None     # embedder: cosine to the reference vector of the same text
    cosine_p1: float | None = None
    cosine_min: float | None = None
    jaccard_at_10: float | None = None   # mean over queries, top-10 sets vs the reference ranking
    kendall_tau_mean: float | None = None  # reranker: τ-b of the top-20 scores vs the reference's
    kendall_tau_min: float | None = None
    score_max_abs_diff: float | None = None  # reranker: max |score - reference score|
    docs_per_s: float | None = None      # documents embedded (reranker: pairs scored) per second
    skipped: str | None = None           # why this variant did not run here

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass
class EvalReport:
    """The table of ``evaluate``: one row per variant, with what the comparisons are against."""

    model: str
    kind: str
    collection: str
    n_queries: int
    n_docs: int
    compared_to: str | None              # the row cosines, Jaccard and τ are measured against
    rows: list[EvalRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, object] = field(default_factory=dict)

    def row(self, name: str) -> EvalRow:
        """The row of ``backend/precision``, e.g. ``report.row("onnx/int8")``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r} in this report (rows: {', '.join(r.name for r in self.rows)})")

    def to_dict(self) -> dict:
        """Plain JSON-able data (NaN as None); the export stage stores this in the manifest."""
        return _finite(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self) -> str:
        """A header and a markdown table; skipped variants are listed under it with their reason."""
        reranker = self.kind == "reranker"
        columns = [("model", None), ("artifact", None), ("backend", None), ("precision", None), ("nDCG@10", "ndcg_at_10"),
                   ("Recall@100", "recall_at_100")]
        columns += ([("τ mean", "kendall_tau_mean"), ("τ min", "kendall_tau_min"),
                     ("max |Δscore|", "score_max_abs_diff")] if reranker else
                    [("cos mean", "cosine_mean"), ("cos p1", "cosine_p1"), ("cos min", "cosine_min")])
        columns += [("top-10 Jaccard", "jaccard_at_10"), ("pairs/s" if reranker else "docs/s", "docs_per_s")]
        lines = [f"{self.kind} {self.model} on {self.collection}: {self.n_queries} queries, {self.n_docs} documents; "
                 f"compared to: {self.compared_to or 'nothing (no fp32 row ran)'}",
                 f"machine: {self.machine.get('cpu')}, {self.machine.get('cores')} cores, 1-min load "
                 f"{self.machine.get('load_average_1min')}, {self.machine.get('date')}", "",
                 "| " + " | ".join(c for c, _ in columns) + " |", "|" + "---|" * len(columns)]
        ran = [r for r in self.rows if r.skipped is None]
        for row in ran:
            cells = [Path(self.model).name or self.model, row.artifact, row.backend, row.precision]
            cells += [_cell(key, getattr(row, key)) for _, key in columns[4:]]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"- {r.name} skipped: {r.skipped}" for r in self.rows if r.skipped is not None]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _cell(key: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "docs_per_s":
        return f"{value:.1f}"
    if key.startswith("cosine"):
        return f"{value:.6f}"
    if key == "score_max_abs_diff":
        return f"{value:.2e}"
    return f"{value:.4f}"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ evaluation

def evaluate(model: str | os.PathLike, collection: str | os.PathLike | Collection, *,
             artifacts: str | Sequence[str] = "all runnable", reference: bool = False,
             subsample: Subsample | None = None, retriever: str | os.PathLike | None = None,
             reference_model: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32,
             log: Callable[[str], None] | None = None) -> EvalReport:
    """Evaluate ``model`` (folder or Hub id) on ``collection`` (Cranfield/BEIR folder or a Collection).

    ``artifacts``: "all runnable" or names such as "onnx/int8", "openvino/bf16". ``reference``: add
    the sentence-transformers row (torch, weights from ``reference_model`` or the manifest's source)
    and compare against it. A reranker needs ``retriever``, an embedder whose fp32 top-20 it reranks.
    """

    log = log or (lambda message: None)
    coll = collection if isinstance(collection, Collection) else load_collection(collection)
    if subsample is not None:
        coll = subsample_collection(coll, subsample.queries, subsample.docs, subsample.seed)
    names = variant_names(artifacts)
    folder = resolve_model(model)
    spec = load_spec(folder)
    q, d, g = coll.gain_arrays()
    judgments = metrics.Judgments.from_arrays(q, d, g, len(coll.query_ids), len(coll.doc_ids))
    report = EvalReport(model=str(model), kind=spec.kind, collection=coll.name, n_queries=len(coll.queries),
                        n_docs=len(coll.docs), compared_to=None, notes=list(coll.notes), machine=machine_info())
    if spec.kind == "reranker":
        if retriever is None:
            raise ValueError(f"{model} is a reranker: give retriever= (--retriever MODEL), an embedder "
                                 f"whose fp32 top-{RERANK_DEPTH} per query it reranks")
        run = _RerankerRun(coll, judgments, retriever, device, batch_size, log)
    else:
        run = _EmbedderRun(coll, judgments, batch_size, log)
    run.report = report
    if reference:

        source = reference_source(folder, reference_model)
        log(f"reference: sentence-transformers on torch, {source}")
        run.add_reference(source)
    for name in names:
        backend, dtype = name.split("/")
        try:
            log(f"{name}: loading")
            run.add_variant(model, backend, dtype, device)
        except (GraniteRTError, ImportError) as err:
            report.rows.append(EvalRow(backend, dtype, skipped=" ".join(str(err).split())))
            log(f"{name}: skipped ({report.rows[-1].skipped})")
    run.compare()
    return report


def variant_names(artifacts: str | Sequence[str]) -> list[str]:
    if isinstance(artifacts, str):
        names = list(CPU_VARIANTS) if artifacts == "all runnable" else [a.strip() for a in artifacts.split(",")]
    else:
        names = list(artifacts)
    unknown = [n for n in names if n not in KNOWN_VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown artifact variant(s) {unknown or names}: use 'all runnable' or names from "
                         f"{', '.join(KNOWN_VARIANTS)}")
    return names


class _Run:
    """Collects each variant's outputs and ranking, then fills the comparison columns against the reference."""

    report: EvalReport

    def __init__(self, coll: Collection, judgments: metrics.Judgments, batch_size: int,
                 log: Callable[[str], None]) -> None:
        self.coll, self.judgments, self.batch_size, self.log = coll, judgments, batch_size, log
        self.outputs: dict[str, tuple[EvalRow, np.ndarray, np.ndarray]] = {}   # name -> row, outputs, ranking

    def _record(self, row: EvalRow, outputs: np.ndarray, ranking: np.ndarray) -> None:
        row.ndcg_at_10 = float(np.nanmean(metrics.ndcg_at_k(ranking, self.judgments, 10)))
        row.recall_at_100 = float(np.nanmean(metrics.recall_at_k(ranking, self.judgments, RANK_DEPTH)))
        self.report.rows.append(row)
        self.outputs[row.name] = (row, outputs, ranking)
        self.log(f"{row.name}: nDCG@10 {row.ndcg_at_10:.4f}, Recall@100 {row.recall_at_100:.4f}, "
                 f"{row.docs_per_s:.1f}/s")

    def _baseline(self) -> str | None:
        """sentence-transformers when it ran, else the first runtime fp32 row."""
        for name in ("sentence-transformers/fp32", "onnx/fp32", "openvino/fp32"):
            if name in self.outputs:
                return name
        return None

    def compare(self) -> None:
        base = self._baseline()
        self.report.compared_to = base
        if base is None:
            self.report.notes.append("no fp32 variant ran, so nothing to compare outputs against")
            return
        _, base_out, base_rank = self.outputs[base]
        for name, (row, out, ranking) in self.outputs.items():
            if name != base:
                row.jaccard_at_10 = float(metrics.jaccard_at_k(ranking, base_rank, 10).mean())
                self._compare_outputs(row, out, base_out)

    def _compare_outputs(self, row: EvalRow, out: np.ndarray, base: np.ndarray) -> None:
        raise NotImplementedError


class _EmbedderRun(_Run):
    """Embeds queries and documents; ranks documents by cosine (dot product of normalised vectors)."""

    def add_reference(self, source: str) -> None:

        model = ReferenceEmbedder(source)
        self._add(EvalRow("sentence-transformers", "fp32", f"torch: {Path(source).name}"), model.encode)

    def add_variant(self, model: str | os.PathLike, backend: str, dtype: str, device: str) -> None:

        embedder = Embedder(model, backend=backend, device=device, dtype=dtype)

        def encode(texts: list[str], batch_size: int) -> np.ndarray:
            with warnings.catch_warnings():  # truncation at max_length is what the reference does too
                warnings.filterwarnings("ignore", message=".*exceed max_length")
                return embedder.encode(texts, batch_size=batch_size, normalize=True)

        self._add(EvalRow(backend, dtype, _checked_info(embedder.info, backend, dtype)), encode)

    def _add(self, row: EvalRow, encode: Callable[[list[str], int], np.ndarray]) -> None:
        self.log(f"{row.name}: embedding {len(self.coll.queries)} queries and {len(self.coll.docs)} documents")
        queries = np.asarray(encode(self.coll.queries, self.batch_size), np.float32)
        start = time.perf_counter()
        docs = np.asarray(encode(self.coll.docs, self.batch_size), np.float32)
        row.docs_per_s = len(self.coll.docs) / (time.perf_counter() - start)
        self._record(row, np.concatenate([queries, docs]), rank_by_cosine(queries, docs, RANK_DEPTH))

    def _compare_outputs(self, row: EvalRow, out: np.ndarray, base: np.ndarray) -> None:
        stats = metrics.summary(metrics.cosine_rows(out, base))
        row.cosine_mean, row.cosine_p1, row.cosine_min = stats["mean"], stats["p1"], stats["min"]


class _RerankerRun(_Run):
    """Reranks the retriever's fp32 top-20 per query; below rank 20 the retriever's order is kept."""

    def __init__(self, coll: Collection, judgments: metrics.Judgments, retriever: str | os.PathLike,
                 device: str, batch_size: int, log: Callable[[str], None]) -> None:
        super().__init__(coll, judgments, batch_size, log)

        embedder = Embedder(retriever, device=device, dtype="fp32")
        log(f"first stage: {retriever} fp32, embedding {len(coll.queries) + len(coll.docs)} texts")
        self.first = rank_by_cosine(embedder.encode(coll.queries, batch_size=batch_size),
                                    embedder.encode(coll.docs, batch_size=batch_size), RANK_DEPTH)
        self.candidates = self.first[:, :RERANK_DEPTH]
        self.pairs = [(coll.queries[i], coll.docs[j]) for i, row in enumerate(self.candidates) for j in row]
        self.first_stage_note = (
            f"candidates: top-{self.candidates.shape[1]} per query of {retriever} (fp32, {embedder.info.get('backend')}); "
            f"first stage alone: nDCG@10 {np.nanmean(metrics.ndcg_at_k(self.first, judgments, 10)):.4f}, "
            f"Recall@100 {np.nanmean(metrics.recall_at_k(self.first, judgments, RANK_DEPTH)):.4f}")

    def add_reference(self, source: str) -> None:

        model = ReferenceReranker(source)
        self._add(EvalRow("sentence-transformers", "fp32", f"torch: {Path(source).name}"), model.predict)

    def add_variant(self, model: str | os.PathLike, backend: str, dtype: str, device: str) -> None:

        reranker = Reranker(model, backend=backend, device=device, dtype=dtype)
        self._add(EvalRow(backend, dtype, _checked_info(reranker.info, backend, dtype)),
                  lambda pairs, batch_size: reranker.predict(pairs, batch_size=batch_size))

    def _add(self, row: EvalRow, predict: Callable[[list[tuple[str, str]], int], np.ndarray]) -> None:
        self.log(f"{row.name}: scoring {len(self.pairs)} pairs")
        start = time.perf_counter()
        scores = np.asarray(predict(self.pairs, self.batch_size), np.float64).reshape(self.candidates.shape)
        row.docs_per_s = len(self.pairs) / (time.perf_counter() - start)
        order = np.argsort(-scores, axis=1, kind="stable")
        ranking = np.concatenate([np.take_along_axis(self.candidates, order, axis=1),
                                  self.first[:, self.candidates.shape[1]:]], axis=1)
        self._record(row, scores, ranking)

    def compare(self) -> None:
        self.report.notes.append(self.first_stage_note)
        super().compare()

    def _compare_outputs(self, row: EvalRow, out: np.ndarray, base: np.ndarray) -> None:
        tau = metrics.summary(metrics.kendall_tau(out, base))
        row.kendall_tau_mean, row.kendall_tau_min = tau["mean"], tau["min"]
        row.score_max_abs_diff = float(np.abs(out - base).max())


def rank_by_cosine(queries: np.ndarray, docs: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Top-k document indices per query by dot product (cosine for normalised vectors), in query chunks."""
    return np.concatenate([metrics.top_k(queries[i:i + chunk] @ docs.T, k)
                           for i in range(0, len(queries), chunk)]) if len(queries) else np.zeros((0, 0), np.int64)


def _checked_info(info: dict, backend: str, dtype: str) -> str:
    """The file that runs, after checking the runtime runs what was asked (no silent fallback)."""
    if (info.get("backend"), info.get("dtype")) != (backend, dtype):
        raise GraniteRTError(f"asked for {backend}/{dtype}, the runtime chose {info.get('backend')}/{info.get('dtype')}")
    return str(info.get("file", ""))


def machine_info() -> dict[str, object]:
    """CPU, cores, load (other work skews docs/s), OS, date and the versions of what runs, for the record."""
    cpu = host.cpu_model()
    versions = {}
    for dist in ("granite-rt", "numpy", "onnxruntime", "openvino", "sentence-transformers", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None  # 3.73, not 3.73046875
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1min": load, "platform": platform.platform(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "versions": versions}
