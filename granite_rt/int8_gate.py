"""The INT8 gate: an INT8 artifact is recommended only if it stays close to the fp32 artifact of the same folder.

Both run through the runtime users get on a shipped probe set that looks like retrieval
(``calibration/int8_probes.json``, built by export/calibration/build_sets.py and disjoint from the calibration
texts): 136 short queries (64 Cranfield queries, 3 sentences in each of 24 languages) and 148 passages
(Cranfield abstracts, Tatoeba lines in the same 24 languages, 12 passages of ~1,400 words that fill a
512-token window or more). Embedders: cosine of each text's vector to fp32 (mean, 1st percentile,
min) and how many of each query's top-10 passages INT8 keeps; rerankers: each query's 8 candidates,
Kendall τ of their order and the largest |Δlogit| (passages cut to RERANKER_PASSAGE_WORDS words).
Measured reasons for the bounds: docs/fidelity.md
(all-MiniLM-L6-v2: mean 0.997, p1 0.994); trained encoders have outlier channels that can break a
recipe where random weights do not (tests/test_int8_gate.py shows one).

Export and ``granite-rt quantize`` both call ``measure``; the result goes into the manifest, where
``"recommended": false`` makes ``dtype="auto"`` skip the artifact (devices._choose_dtype).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from granite_rt.backends.base import Artifact
from granite_rt.embedder import Embedder
from granite_rt.reranker import Reranker
from granite_rt.eval.metrics import MIN_LOGIT_SPREAD, cosine_rows, kendall_tau, overlap_at_k, summary, top_k

PROBES = Path(__file__).with_name("calibration") / "int8_probes.json"
CANDIDATES_PER_QUERY = 8
# A reranker sees each candidate passage once per query: the 12 long passages (1,200-2,000 words) fill 84 of the
# 1,088 pairs and two thirds of their tokens, and the gate ran >25 min of the bench reranker's export (22 layers,
# hidden 768, 2 cores). Cut to their first 450 words (still past a 512-token window with the query) the pairs
# hold half the tokens.
RERANKER_PASSAGE_WORDS = 450
# A ranking figure is judged only where fp32 itself separates what it ranks: the median gap between a query's
# 10th and 11th passage (all-MiniLM-L6-v2 0.0067; a tiny random-weight model 7e-8, where every text gets nearly
# one vector and any rounding reorders ties), and the median spread of a query's candidate logits
# (MIN_LOGIT_SPREAD, granite_rt.eval.metrics: a tiny random reranker 0.002 against INT8 changes of 0.007).
MIN_TOP10_GAP = 1e-4


@dataclass(frozen=True)
class GateBounds:
    """What an INT8 artifact must reach against fp32 to be recommended (``granite-rt export/quantize --gate-*``)."""

    mean_cosine: float = 0.99
    p1_cosine: float = 0.97
    top10_overlap: float = 0.9
    kendall_tau: float = 0.9

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"INT8 gate bound {name}={value} is not within [0, 1]")


def parse_bounds(text: str | None) -> GateBounds:
    """``--int8-gate mean_cosine=0.99,p1_cosine=0.97,top10_overlap=0.9,kendall_tau=0.9`` (any subset)."""
    if not text:
        return GateBounds()
    known = set(asdict(GateBounds()))
    values: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in known:
            raise ValueError(f"--int8-gate {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--int8-gate {item!r}: {value!r} is not a number") from None
    return GateBounds(**values)


def gate_artifacts(folder: Path, kind: str, artifacts: list[Artifact], bounds: GateBounds) -> dict[str, GateResult]:
    """``measure`` for every INT8 artifact of ``artifacts`` against the fp32 one of the same backend (else any)."""
    fp32 = [a for a in artifacts if a.precision == "fp32"]
    results = {}
    for artifact in artifacts:
        if artifact.precision != "int8":
            continue
        same = [a for a in fp32 if a.backend == artifact.backend] or fp32
        if not same:
            raise ValueError(f"{artifact.path}: the INT8 gate needs an fp32 artifact in {folder} to compare with")
        results[artifact.path] = measure(folder, kind, artifact, same[0], bounds)
    return results


def gate_table(results: dict[str, GateResult]) -> str:
    """One line per gated artifact: its figures and PASS, or NOT RECOMMENDED with the missed bounds."""
    lines = ["INT8 gate (against fp32, shipped probe set):"]
    for path, result in results.items():
        figures = "  ".join(f"{k} {v:.4g}" for k, v in result.figures.items())
        verdict = "pass" if result.recommended else "NOT RECOMMENDED: " + "; ".join(result.missed)
        lines.append(f"  {path}  {figures}  {verdict}")
    return "\n".join(lines)


@dataclass
class GateResult:
    """The figures of one INT8 artifact against fp32, and the bounds it missed (none: recommended)."""

    figures: dict[str, float]
    bounds: dict[str, float]
    missed: list[str] = field(default_factory=list)
    reference: str = ""
    not_applied: list[str] = field(default_factory=list)

    @property
    def recommended(self) -> bool:
        return not self.missed

    def to_manifest(self) -> dict[str, Any]:
        return {"reference": self.reference, "probes": probe_counts(), "figures": self.figures,
                "bounds": self.bounds, "missed": self.missed, "not_applied": self.not_applied}


@dataclass(frozen=True)
class Probes:
    queries: tuple[str, ...]
    passages: tuple[str, ...]
    candidates: tuple[tuple[int, ...], ...]   # per query: CANDIDATES_PER_QUERY passage indices (rerankers)


@lru_cache(maxsize=1)
def probes() -> Probes:
    """The shipped probe set (read once)."""
    data = json.loads(PROBES.read_text(encoding="utf-8"))
    return Probes(tuple(data["queries"]), tuple(data["passages"]), tuple(tuple(c) for c in data["candidates"]))


def probe_counts() -> dict[str, int]:
    p = probes()
    return {"queries": len(p.queries), "passages": len(p.passages), "pairs": sum(len(c) for c in p.candidates)}


def measure(folder: Path, kind: str, int8: Artifact, fp32: Artifact, bounds: GateBounds = GateBounds()) -> GateResult:
    """Run ``int8`` and ``fp32`` of ``folder`` on the probe set and compare them (both on CPU)."""
    reference = _outputs(folder, kind, fp32)
    candidate = _outputs(folder, kind, int8)
    figures = embedder_figures(reference, candidate) if kind == "embedder" else reranker_figures(reference, candidate)
    return judge(figures, bounds, reference=f"{fp32.path} ({fp32.backend} fp32)")


def embedder_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Cosine of every probe's vector (queries then passages) and the queries' top-10 passage overlap."""
    cos = summary(cosine_rows(reference, candidate))
    n_queries = len(probes().queries)

    def ranking(vectors: np.ndarray) -> np.ndarray:
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return top_k(v[:n_queries] @ v[n_queries:].T, 10)

    overlap = overlap_at_k(ranking(reference), ranking(candidate), 10)
    v = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    scores = -np.sort(-(v[:n_queries] @ v[n_queries:].T), axis=1)
    return {"mean_cosine": cos["mean"], "p1_cosine": cos["p1"], "min_cosine": cos["min"],
            "top10_overlap": float(overlap.mean()), "min_top10_overlap": float(overlap.min()),
            "fp32_top10_gap": float(np.median(scores[:, 9] - scores[:, 10]))}


def reranker_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Logits shaped (queries, candidates): Kendall τ of each query's order and the largest |Δlogit|."""
    tau = summary(kendall_tau(reference, candidate))
    return {"kendall_tau": tau["mean"], "p1_kendall_tau": tau["p1"], "min_kendall_tau": tau["min"],
            "max_abs_logit_diff": float(np.abs(reference - candidate).max()),
            "fp32_logit_spread": float(np.median(reference.max(axis=1) - reference.min(axis=1)))}


def judge(figures: dict[str, float], bounds: GateBounds, reference: str = "") -> GateResult:
    """The bounds that ``figures`` miss: those of the figures given, ranking figures only where fp32 separates
    what it ranks (MIN_TOP10_GAP, MIN_LOGIT_SPREAD; else named in ``not_applied``)."""
    ties = {"top10_overlap": ("fp32_top10_gap", MIN_TOP10_GAP), "kendall_tau": ("fp32_logit_spread", MIN_LOGIT_SPREAD)}
    applied, not_applied = {}, []
    for name, bound in asdict(bounds).items():
        if name not in figures:
            continue
        floor = ties.get(name)
        if floor and figures.get(floor[0], floor[1]) < floor[1]:
            not_applied.append(f"{name.replace('_', ' ')}: fp32 cannot rank the probes ({floor[0].replace('_', ' ')} "
                               f"{figures[floor[0]]:.1e} < {floor[1]})")
            continue
        applied[name] = bound
    missed = [f"{name.replace('_', ' ')} {figures[name]:.4f} < {bound}"
              for name, bound in applied.items() if not figures[name] >= bound]
    return GateResult(figures={k: float(f"{v:.6g}") for k, v in figures.items()}, bounds=applied, missed=missed,
                      reference=reference, not_applied=not_applied)


def _outputs(folder: Path, kind: str, artifact: Artifact) -> np.ndarray:
    """Embeddings of queries + passages, or logits (queries × candidates), from ``artifact`` on CPU."""
    p = probes()
    model_class = Reranker if kind == "reranker" else Embedder
    with warnings.catch_warnings():  # long passages are truncated on purpose; unrecommended INT8 runs on purpose
        warnings.simplefilter("ignore", UserWarning)
        model = model_class(folder, backend=artifact.backend, dtype=artifact.precision, device="cpu")
        if model.info["file"] != artifact.path:
            raise RuntimeError(f"the INT8 gate loaded {model.info['file']}, not {artifact.path}")
        if kind == "reranker":
            passages = [" ".join(text.split(" ")[:RERANKER_PASSAGE_WORDS]) for text in p.passages]
            pairs = [(q, passages[i]) for q, cands in zip(p.queries, p.candidates) for i in cands]
            logits = model.predict(pairs, activation="identity")
            return np.asarray(logits, np.float64).reshape(len(p.queries), CANDIDATES_PER_QUERY)
        return np.asarray(model.encode(list(p.queries) + list(p.passages)), np.float64)
