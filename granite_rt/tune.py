"""Measured placement: time every CPU placement a model folder allows here, keep the fastest faithful one.

No rule written from one CPU holds on the next: on a 2-core AVX2-only Zen 3 onnxruntime INT8 was the
fastest path in every workload, on a 2-core AVX-512 VNNI + BF16 Zen 4 OpenVINO's INT8 IR with a bf16
hint for its unquantized ops was (bench/README.md). ``granite-rt tune MODEL`` and
``Embedder/Reranker(..., tune=True)`` therefore measure:

1. every CPU placement ``devices.cpu_candidates`` plans for the folder (each backend × fp32 / bf16 /
   int8 / int8+bf16 it can run here) is opened with ``devices``' opener, one after another: the fp32
   reference first, then the built-in rule's order (so the likely fastest sets the bar early);
2. each is checked against the fp32 placement on a small probe set (``fidelity``: mean cosine ≥ 0.99,
   p1 ≥ 0.97, the bounds of the INT8 gate; an INT8 file at dtype="int8" whose manifest has the INT8
   gate's figures is taken at those, measured on 284 texts); one that misses them is never timed or chosen;
3. one short query (5 calls) and a batch of long documents are timed per round, one placement at a
   time, each closed before the next opens: all six placements of the 97m shape open at once peaked at
   2.2 GB, and two engines open together slow each other (measured on a Zen 4, 2 cores: onnxruntime fp32
   took 1.55 s for the 4 × 384-token batch in rounds alternating with an open OpenVINO model, 0.58 s
   alone). A placement more than ``CLEAR`` (15 %, widened by the spread the load put on the round's
   query calls) slower than the fastest so far after one round stops there; the others get ``rounds``
   (the first one timed, with nothing to compare it with, gets one, and the rest at the end only if it is
   not clearly behind then: the fp32 reference seldom is); then each timed placement whose batch took at
   most ``THROUGHPUT_WITHIN`` (1.5x) the fastest's is opened again as a ``workload="throughput"`` load opens it
   (OpenVINO's THROUGHPUT streams, onnxruntime's one-thread runs side by side) and its long rows are timed spread
   over its parallel requests, as embed-corpus runs them (the batch's rows, at least one per request, split
   evenly and run at once; ranked by seconds per row): the two modes rank differently (OpenVINO int8+bf16
   took 0.70x its latency mode's time on 8 x 512 tokens, onnxruntime INT8 0.87-0.96x; Zen 4, 2 cores);
4. for an embedder the placement with the lowest geometric mean of its two median times wins; for a reranker,
   whose call is a query's candidates, the lowest batch time; for a ``workload="throughput"`` load of either (as
   embed-corpus loads) the lowest time per long row as a throughput load (the choices differ where one placement is
   fastest on queries and another on batches, as onnxruntime INT8 and OpenVINO INT8+bf16 were on a Zen 4 and on a
   Xeon); within ``TIE`` (3 %) the built-in rule's choice wins. The decision is stored in ``<cache>/tune/<key>.json``, keyed by CPU
   model + flags, library versions and the model files;
5. where the latency choice is onnxruntime's and runs a call of several batches side by side (``SideBySide``:
   one-thread runs at once, measured only on a 2-core Zen 4: 0.73-0.97x the time of one threaded batch after
   another), it is opened once more and a call of ``SIDE_BY_SIDE_BATCHES`` per thread long-document batches is
   timed both ways, alternating, ``SIDE_BY_SIDE_ROUNDS`` rounds, each way after an untimed run of itself (so that
   a switch from one way to the other is not counted); more than ``TIE`` slower side by side by the
   median and in at least three rounds of four, it gets as many rounds again, and only if all the rounds together still
   say so does the decision turn it off for loads that follow it (``Measured.side_by_side``).

Steps 3 and 5 so cut took a fresh-cache tune of the bench's exports from 15.1-16.2 to 12.8-13.3 s (97m shape) and
from 53.4-61.3 to 34.5-40.2 s (reranker shape; two runs each, old and new alternating, Zen 4, 2 cores, 2026-12-07).

``dtype="auto"`` loads use a stored decision (``info["why"]`` says "measured on this machine …"),
else the built-in rules; a plain load never measures. ``GRANITE_RT_CACHE=off`` keeps decisions off
disk (``tune=True`` then measures at every load).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from granite_rt import devices, host
from granite_rt.backends.base import Backend, Placement
from granite_rt.batching import pad_batch
from granite_rt.errors import GraniteRTError, one_line
from granite_rt.eval.metrics import MIN_LOGIT_SPREAD
from granite_rt.pooling import l2_normalize, pool
from granite_rt.tokenize import Tokenizer

DECISION_VERSION = 5
# Where an INT8 file's fidelity at dtype="int8" comes from when its manifest has the INT8 gate's figures: the
# same placement (the INT8 file with the f32 hint) against that backend's fp32 file, on 284 probe texts.
GATE = "the export's INT8 gate"
# The INT8 gate's bounds (issue 17), applied to every placement that is not the fp32 reference.
MEAN_COSINE, P1_COSINE = 0.99, 0.97
# A reranker query fp32 cannot rank (``Fidelity.unranked``) passes when no centred logit moves by more than half
# the smallest spread that is ranked: a broken placement moves them by the logits' own scale.
UNRANKED_MAX_DIFF = MIN_LOGIT_SPREAD / 2
# Timed shapes: one short query; a batch of long documents, (rows, tokens) per model kind. The batch is the tuner's
# main cost (a 4 × 384-token batch took 11.7 of a 18.6 s tune of the 97m shape, Xeon, 2 cores); at 2 × 384 tokens
# two runs chose the same placement (onnxruntime int8, 0.170 s against 0.339 s for 4 × 384) in 11.7 s (fresh cache)
# and 8.4 s, placements within ~10 % of each other swapping places as between runs. A reranker's batch is a query's
# candidates: 4 × 256 tokens, where the engines' order is that of a rerank call (reranker shape, same Xeon, time vs
# onnxruntime INT8: OpenVINO INT8 + bf16 hint 1.56x on one 49-token pair, 1.13x on 4 × 64, 0.95x on 1 × 384,
# 0.82-0.91x on 4 × 256, 0.85x on bench (d)'s 20 × 274 pairs; one pair hid that).
QUERY = "how do boundary layers behave in hypersonic flow?"
DOC_BATCH = {"embedder": (2, 384), "reranker": (4, 256)}
# What a placement is ranked by: an embedder serves single queries and document batches alike (the geometric mean
# of both shapes' times); a reranker scores a query's candidates in one call, so its batch's time.
RANKED_SHAPES = {"embedder": ("query", "docs"), "reranker": ("docs",)}
CALLS = {"query": 5, "docs": 1}  # timed calls per shape per round: a query is short and noisier
# Untimed runs of each shape before the first round, which decides whether a placement gets more rounds: the
# first run of a shape after a compile sets up kernels and buffers (OpenVINO's first 11-token query took 65-91 ms,
# its second 12-17 ms; the first 2 × 384-token batch 1.0-1.3x the later ones, the second within 5 % of them; Xeon,
# 2 cores), and one slow first round is enough for the early stop to drop a placement.
WARMUP_RUNS = 1
# After one round, a placement more than CLEAR slower than the fastest so far (widened by how much the machine's
# load moved the rounds' query calls, ``_spread``) stops; the others get ``rounds``. Within TIE the built-in
# rule's choice wins.
CLEAR, TIE = 0.15, 0.03
# Batches per thread in the several-batch call that times side-by-side runs against one threaded batch after another:
# one (two took the reranker shape's tune from 58 to 68 s, its 4 x 256-token batches 0.5 s each; Zen 4, 2 cores).
SIDE_BY_SIDE_BATCHES = 1
# Its rounds, and the share of them side by side must lose (beside a median more than TIE slower) to be turned off.
# One round's ratio is noisy: 15 rounds in one process on the 97m shape (Zen 4, 2 cores, 2026-12-07 21:50 UTC)
# spread 0.79-1.28x around a median of 1.075x, and three-round tunes gave 0.907x, 0.857x and 1.206x; a tie stays
# on, as the built-in rule has it (measured 0.73-0.97x on calls of several batches).
SIDE_BY_SIDE_ROUNDS = 5
SIDE_BY_SIDE_SLOWER_SHARE = 0.75
# Rounds that say "off" get a second look of as many rounds, and the decision is taken on all of them: on the quick
# side of this VM's two speed regimes side by side is level, on the slow side it gains (10 paired rounds of this
# step's call on the 97m shape, Zen 4, 2026-12-07 23:57 UTC: 0.94-1.10x in quick rounds, 0.75-0.82x in slow ones; a
# call of 64 Cranfield abstracts through encode alike: 0.92-1.00x and 0.74-0.79x), so turning it off on a chance
# run of slower rounds loses the slow side's gain while keeping it on costs nothing measurable. A fresh tune minutes
# before turned it off at 1.15x, slower in 4 of 5 rounds.
SIDE_BY_SIDE_LOOKS = 2
# A placement whose long-document batch took more than this times the fastest one's is not timed as a throughput
# load: the two modes move placements against each other by at most 1.37x in every measurement (OpenVINO
# int8+bf16's THROUGHPUT streams 0.70x its latency time on 8 x 512 tokens, onnxruntime INT8's 0.87-0.96x; the
# tuner's own rows 0.77-0.96x, Zen 4, 2 cores), so it could not be the throughput choice.
THROUGHPUT_WITHIN = 1.5
LIBRARIES = ("granite_rt", "onnxruntime", "openvino", "tokenizers", "numpy")           # import names
DISTRIBUTIONS = ("granite-rt", "onnxruntime", "openvino", "tokenizers", "numpy")        # and what pip calls them


def loses_side_by_side(median: float, slower: int, rounds: int) -> bool:
    """Side by side ran more than ``TIE`` slower by the median and in at least ``SIDE_BY_SIDE_SLOWER_SHARE`` of
    the rounds."""
    return median > 1 + TIE and slower >= SIDE_BY_SIDE_SLOWER_SHARE * rounds


def side_by_side_summary(ratios: Sequence[float]) -> tuple[float, int, int]:
    """Same-round ratios (side by side over one after another) → their median, in how many side by side was the
    slower, and how many there were: what ``loses_side_by_side`` and ``Measured`` take."""
    return float(np.median(ratios)), sum(r > 1 for r in ratios), len(ratios)


# Probe set: retrieval-like text in a few languages and scripts, short and long (the export's gate uses
# its own, larger set; this one only has to separate a faithful placement from a broken one).
PROBE_QUERIES = (
    "What limits the heat transfer at the leading edge of a wing?",
    "¿Cuál es la capital de Francia?",
    "Wie funktioniert ein Transformator?",
)
PROBE_PASSAGES = (
    "The boundary layer thickens downstream of the leading edge, and the heat transfer falls with it; "
    "at high Mach numbers the shock layer and the boundary layer merge near the nose.",
    "París es la capital y la ciudad más poblada de Francia, a orillas del río Sena.",
    "Ein Transformator überträgt elektrische Energie zwischen zwei Stromkreisen durch magnetische Induktion.",
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
    "Water boils at 100 degrees Celsius at sea level; at altitude the boiling point is lower.",
    "Машинное обучение — класс методов искусственного интеллекта, обучающихся на данных.",
    "The experiments on a flat plate at zero incidence show transition at a Reynolds number near 3 × 10^5 "
    "when the free-stream turbulence is low, earlier when the surface is rough or the pressure gradient "
    "adverse, and the measured skin friction agrees with the Blasius solution upstream of it.",
    "Une éolienne convertit l'énergie cinétique du vent en énergie mécanique puis électrique.",
)


@dataclass(frozen=True)
class Fidelity:
    """How close a placement's outputs are to the fp32 placement's on the probe set (cosine per row).

    ``unranked`` (rerankers): queries whose fp32 logits span less than MIN_LOGIT_SPREAD, so they have no order
    a cosine could judge (a random-weight reranker's span ~0.07, where bf16 rounding alone gave cosines < 0.9);
    they are judged by ``unranked_max_diff``, their largest change of a centred logit, against UNRANKED_MAX_DIFF,
    and the cosines cover the other queries (all of them, for the record, when every query is unranked).
    """

    mean: float
    p1: float
    minimum: float
    unranked: int = 0
    unranked_max_diff: float = 0.0
    cosines_judged: bool = True   # False: every row is unranked, the cosines are only recorded

    @property
    def passed(self) -> bool:
        return (not self.cosines_judged or (self.mean >= MEAN_COSINE and self.p1 >= P1_COSINE)) \
            and self.unranked_max_diff <= UNRANKED_MAX_DIFF


def fidelity(reference: np.ndarray, candidate: np.ndarray, ranked: np.ndarray | None = None) -> Fidelity:
    """Cosine of each row of ``candidate`` to the same row of ``reference``: mean, 1st percentile, min.

    Rows are pooled vectors (embedders) or one query's centred logits over its passages (rerankers,
    ``probe_outputs``). ``ranked`` (rerankers): per row, whether fp32 separates its logits (``ranked_rows``);
    the others count as ``unranked`` and are judged by their largest absolute difference.
    """
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"outputs differ in shape: {cand.shape} vs the reference's {ref.shape}")
    with np.errstate(invalid="ignore"):
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = np.where(norms > 0, (ref * cand).sum(axis=1) / np.maximum(norms, 1e-30), 0.0)
    cos = np.where(np.isfinite(cand).all(axis=1) & np.isfinite(cos), cos, -1.0)  # NaN/inf rows: as far as it gets
    ranked = np.ones(len(ref), bool) if ranked is None else np.asarray(ranked, bool)
    diff = np.abs(ref[~ranked] - cand[~ranked])
    unranked_max = float(np.where(np.isfinite(diff), diff, np.inf).max()) if diff.size else 0.0
    judged = cos[ranked] if ranked.any() else cos
    return Fidelity(float(judged.mean()), float(np.percentile(judged, 1)), float(judged.min()),
                    unranked=int((~ranked).sum()), unranked_max_diff=unranked_max, cosines_judged=bool(ranked.any()))


def ranked_rows(reference_logits: np.ndarray) -> np.ndarray:
    """Per query (row), whether its fp32 candidate logits span at least MIN_LOGIT_SPREAD."""
    logits = np.asarray(reference_logits, np.float64)
    return (logits.max(axis=1) - logits.min(axis=1)) >= MIN_LOGIT_SPREAD


def label(placement: Placement) -> str:
    """``"openvino int8+bf16"``: how tables and ``info["why"]`` name a CPU placement."""
    return f"{placement.backend} {placement.dtype}"


def identity(placement: Placement) -> dict[str, str]:
    """What a stored decision records of a placement: enough to find it again among the candidates."""
    return {"backend": placement.backend, "dtype": placement.dtype, "file": placement.artifact.path}


# ---- the stored decision ------------------------------------------------------------------------------

def library_identity() -> dict[str, str]:
    """Each library that decides the speed, by its package file's path, size and mtime: an upgrade rewrites it.

    Found without importing anything (importlib.metadata alone costs 60 ms of a cold start); the versions
    are recorded, at tune time only, by ``library_versions``.
    """
    out = {}
    for module in LIBRARIES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            try:
                st = os.stat(spec.origin)
            except OSError:  # a frozen app: the module lies in the app's archive, replaced whole by an update
                out[module] = spec.origin
                continue
            out[module] = f"{spec.origin}:{st.st_size}:{st.st_mtime_ns}"
    return out


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries of ``LIBRARIES`` (for the record and the report)."""
    out = {}
    for module, dist in zip(LIBRARIES, DISTRIBUTIONS):
        version = host.installed_version(dist)
        if version:
            out[dist] = version
    return out


def decision_key(artifact_keys: Sequence[str], host_: Mapping[str, Any] | None = None,
                 libraries: Mapping[str, str] | None = None) -> str:
    """Key of a decision: this CPU (model + flags), the libraries (``library_identity``) and the model files."""
    payload = json.dumps({"version": DECISION_VERSION, "host": dict(host_ or host.cpu_facts()),
                          "libraries": dict(libraries or library_identity()), "files": sorted(artifact_keys)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Measured:
    """One candidate's figures: median seconds per shape, fidelity to fp32, or why it could not run."""

    placement: dict[str, str]
    query_s: float | None = None
    docs_s: float | None = None
    fidelity: dict[str, float] | None = None     # Fidelity as a dict; None: it is the reference, or none exists
    passed: bool = True
    error: str | None = None
    # its RANKED_SHAPES median times relative to the fastest placement's, geometric mean (1.0 = the fastest);
    # None: not timed (it failed, or is outside the fidelity bounds)
    relative: float | None = None
    rounds: int = 0                              # timed rounds it ran
    checked_by: str = ""                         # "": the probe set against the reference; else GATE
    # opened as a workload="throughput" load: median seconds per long row, the rows spread over its parallel
    # requests; None: not timed that way (it failed to open so, or the measurement did not ask)
    row_s: float | None = None
    throughput_error: str | None = None          # why it could not be opened or run as a throughput load
    # a call of several batches side by side over one threaded batch after another, median of same-round ratios,
    # and in how many of its rounds side by side was the slower; None: not timed (only the latency choice, where it
    # is onnxruntime's and runs side by side, is)
    side_by_side: float | None = None
    side_by_side_slower: int = 0
    side_by_side_rounds: int = 0

    @property
    def name(self) -> str:
        return f"{self.placement['backend']} {self.placement['dtype']}"

    @property
    def eligible(self) -> bool:
        return self.error is None and self.passed and self.relative is not None

    @property
    def one_batch_at_a_time(self) -> bool:
        """Its several batches lost side by side (``loses_side_by_side``): loads that follow it run them in turn."""
        return self.side_by_side is not None and loses_side_by_side(self.side_by_side, self.side_by_side_slower,
                                                                    self.side_by_side_rounds)

    @property
    def side_by_side_note(self) -> str:
        """``1.08x the time of one after another, slower in 3 of 5 rounds`` ("" where not timed)."""
        if self.side_by_side is None:
            return ""
        return (f"{self.side_by_side:.2f}x the time of one after another, slower in {self.side_by_side_slower} of "
                f"{self.side_by_side_rounds} rounds")


@dataclass(frozen=True)
class Decision:
    """What ``tune`` measured and chose; stored as JSON under the cache dir."""

    key: str
    kind: str
    measured_at: str
    host: dict[str, Any]
    libraries: dict[str, str]
    shapes: dict[str, Any]
    results: tuple[Measured, ...] = field(default_factory=tuple)
    reference: str | None = None                 # the fp32 placement fidelity was measured against
    preferred: tuple[str, ...] = ()              # the built-in rule's CPU order (labels): who wins a tie
    preferred_throughput: tuple[str, ...] = ()   # its order for workload="throughput" loads; (): as ``preferred``

    def _pool(self, backend: str) -> list[Measured]:
        return [r for r in self.results if r.eligible and backend in ("auto", r.placement["backend"])]

    def cost(self, result: Measured, workload: str = "latency") -> float:
        """What ``best`` ranks by (only ratios between results count): for ``workload="latency"`` (loads that serve
        queries and batches alike) ``relative`` (an embedder's geometric mean of the two shapes' times, a
        reranker's batch time: RANKED_SHAPES); for ``"throughput"`` (embed-corpus, batches only) the time per long
        row in throughput mode (``row_s``): a result without one cannot be ranked there when others have one,
        and where none has (a measurement that did not time that mode) the latency batch's time stands in."""
        if workload != "throughput":
            return result.relative
        if result.row_s is not None:
            return result.row_s
        return math.inf if any(r.row_s is not None for r in self.results) else result.docs_s

    def best(self, backend: str = "auto", workload: str = "latency") -> Measured | None:
        """The eligible result with the lowest ``cost`` for ``workload``; results within ``TIE`` of it are a tie,
        won by the one the built-in rule puts first (``preferred``), so a decision differs from the rule only when
        the measurements do."""
        pool = [r for r in self._pool(backend) if math.isfinite(self.cost(r, workload))]
        if not pool:
            return None
        fastest = min(self.cost(r, workload) for r in pool)
        order = {name: n for n, name in enumerate(self.rule_order(workload))}
        tied = [r for r in pool if self.cost(r, workload) <= fastest * (1 + TIE)]
        return min(tied, key=lambda r: (order.get(r.name, len(order)), self.cost(r, workload)))

    def rule_order(self, workload: str = "latency") -> tuple[str, ...]:
        """The built-in rule's CPU order for ``workload`` (an embedder's latency loads and its throughput loads
        can differ: devices.Inventory.for_queries)."""
        return self.preferred_throughput if workload == "throughput" and self.preferred_throughput else self.preferred

    def why(self, backend: str = "auto", workload: str = "latency") -> str:
        """``info["why"]`` of a load that follows this decision."""
        best = self.best(backend, workload)
        if best is None:
            return "no measured placement passed"
        checked = (f"mean cosine {best.fidelity['mean']:.5f} to its fp32 file ({GATE})" if best.checked_by == GATE
                   else f"mean cosine {best.fidelity['mean']:.5f} to {self.reference}{unranked_note(best.fidelity)}"
                   if best.fidelity
                   else "the fp32 reference" if self.reference and best.name == self.reference
                   else "fidelity not checked: the folder has no fp32 file")
        others = sorted((r for r in self.results if r is not best), key=lambda r: r.name)
        fastest = min(self._pool(backend), key=lambda r: self.cost(r, workload))
        tie = (f" (within {TIE:.0%} of {fastest.name}: a tie, so the built-in rule's choice)"
               if fastest is not best else "")
        per_row = workload == "throughput" and best.row_s is not None
        ranked = ("the time per long row run as a throughput load (workload='throughput')" if per_row
                  else "the long-document batch's time (workload='throughput')" if workload == "throughput"
                  else "the candidate batch's time (a reranker scores a query's candidates in one call)"
                  if self.kind == "reranker" else "the geometric mean of both shapes' times")
        rows = (f", {best.row_s * 1e3:.1f} ms per {self.shapes['doc_tokens']}-token row as a throughput load"
                if best.row_s is not None else "")
        if workload == "latency" and best.side_by_side is not None:
            rows += (f", a call of several batches side by side {best.side_by_side_note}"
                     + (" (so one after another)" if best.one_batch_at_a_time else ""))
        return (f"measured on this machine {self.measured_at} (granite-rt tune): fastest of {len(self.results)} CPU "
                f"placements within the fidelity bounds by {ranked}{tie}: query {best.query_s * 1e3:.1f} ms, "
                f"{self.shapes['docs']} × {self.shapes['doc_tokens']}-token batch {best.docs_s:.3f} s{rows}, {checked}"
                + (f"; others: {'; '.join(_brief(r) for r in others)}" if others else ""))

    def choice(self, backend: str = "auto", workload: str = "latency") -> dict[str, str] | None:
        """The best placement for ``devices.select_placements(tuned=...)``: backend, dtype, file and why, and
        side_by_side "off" where a latency load's several batches ran more than ``TIE`` slower side by side."""
        best = self.best(backend, workload)
        if best is None:
            return None
        off = workload == "latency" and best.one_batch_at_a_time
        return {**best.placement, "why": self.why(backend, workload), **({"side_by_side": "off"} if off else {})}

    def to_json(self) -> str:
        return json.dumps({"version": DECISION_VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        data = json.loads(text)
        if data.pop("version", None) != DECISION_VERSION:
            raise ValueError("decision written by another granite-rt version")
        data["results"] = tuple(Measured(**r) for r in data["results"])
        data["preferred"] = tuple(data.get("preferred", ()))
        data["preferred_throughput"] = tuple(data.get("preferred_throughput", ()))
        return cls(**data)


def describe_fidelity(figures: Mapping[str, float], precise: bool = False) -> str:
    """``mean 0.99870, p1 0.99512`` and, for rerankers, ``unranked_note``."""
    digits = 5 if precise else 4
    return f"mean {figures['mean']:.{digits}f}, p1 {figures['p1']:.{digits}f}{unranked_note(figures)}"


def unranked_note(figures: Mapping[str, float]) -> str:
    """``; 3 queries fp32 cannot rank …``: the reranker queries judged by their logits' change, or ""."""
    unranked = int(figures.get("unranked", 0))
    if not unranked:
        return ""
    return (f"{'' if figures.get('cosines_judged', True) else ' (cosines not judged)'}; {unranked} "
            f"{'query' if unranked == 1 else 'queries'} fp32 cannot rank (logit spread < {MIN_LOGIT_SPREAD}): "
            f"max |Δlogit| {figures['unranked_max_diff']:.4f} (bound {UNRANKED_MAX_DIFF})")


def _brief(r: Measured) -> str:
    if r.error:
        return f"{r.name} failed ({r.error[:80]})"
    if r.relative is None:
        return f"{r.name} outside the fidelity bounds ({describe_fidelity(r.fidelity)})"
    rows = f", {r.row_s * 1e3:.1f} ms per row as a throughput load" if r.row_s is not None else ""
    rows += f", several batches side by side {r.side_by_side:.2f}x" if r.side_by_side is not None else ""
    return f"{r.name} {r.query_s * 1e3:.1f} ms / {r.docs_s:.3f} s ({r.relative:.2f}x{rows})"


def decision_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "tune" / f"{key}.json"


def load_decision(cache_dir: Path | None, key: str) -> Decision | None:
    """The stored decision for ``key``, or None (no cache, none stored, or unreadable: a cache only saves time)."""
    if cache_dir is None:
        return None
    try:
        decision = Decision.from_json(decision_path(cache_dir, key).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return decision if decision.key == key else None


def save_decision(cache_dir: Path | None, decision: Decision) -> Path | None:
    """Write the decision atomically; None when the cache is off or not writable."""
    if cache_dir is None:
        return None
    path = decision_path(cache_dir, decision.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f"{path.name}.{os.getpid()}")
        staging.write_text(decision.to_json(), encoding="utf-8")
        staging.replace(path)
    except OSError:
        return None
    return path


# ---- measuring ----------------------------------------------------------------------------------------

Opener = Callable[[Path, Placement], Backend]


def probe_batches(tokenizer: Any, kind: str) -> list[dict[str, np.ndarray]]:
    """The probe set as padded batches: texts (embedders) or every (query, passage) pair (rerankers)."""
    if kind == "embedder":
        encodings = tokenizer.encode(list(PROBE_QUERIES + PROBE_PASSAGES))
    else:
        encodings = tokenizer.encode_pairs([(q, p) for q in PROBE_QUERIES for p in PROBE_PASSAGES])
    return [pad_batch(encodings[i:i + 8], tokenizer.pad_id) for i in range(0, len(encodings), 8)]


def timing_batches(tokenizer: Any, kind: str, max_length: int) -> dict[str, dict[str, np.ndarray]]:
    """The two timed shapes: one short query, and DOC_BATCH[kind] (rows, tokens) of a long text (real text ids)."""
    long_text = " ".join(PROBE_PASSAGES * 12)
    if kind == "embedder":
        query, doc = tokenizer.encode([QUERY])[0], tokenizer.encode([long_text])[0]
    else:
        query, doc = tokenizer.encode_pairs([(QUERY, PROBE_PASSAGES[0])])[0], tokenizer.encode_pairs([(QUERY, long_text)])[0]
    rows, tokens = DOC_BATCH[kind]
    tokens = min(tokens, max_length, len(doc.ids))
    docs = pad_batch([doc], tokenizer.pad_id)
    docs = {name: np.repeat(array[:, :tokens], rows, axis=0) for name, array in docs.items()}
    return {"query": pad_batch([query], tokenizer.pad_id), "docs": docs}


def measure(folder: Path, spec: Any, candidates: Sequence[Placement], opener: Opener, *, key: str,
            tokenizer: Any = None, timer: Callable[[], float] = time.perf_counter, rounds: int = 3,
            budget_s: float = 30.0, preferred: Sequence[str] = (), preferred_throughput: Sequence[str] = (),
            throughput: Sequence[Placement] = (), log: Callable[[str], None] | None = None) -> Decision:
    """Open, check, time and close the candidates one after another (see the module docstring); the Decision,
    not yet stored.

    ``opener(folder, placement)`` returns a Backend; ``timer`` is read around each timed call (tests pass
    fakes of both). The fp32 candidate (onnxruntime's first) is opened first, as the fidelity reference;
    the rest follow ``preferred`` (labels in the built-in rule's order), which also breaks ties (those of
    workload="throughput" choices ``preferred_throughput``, where the rule orders those loads otherwise). Each gets
    ``rounds`` rounds, or one when that already puts it more than ``CLEAR`` behind the fastest so far; the first
    one timed (the reference, when there is one) has nothing to be compared with: it gets one round, and is opened
    again at the end for the rest only when it is not clearly behind then. No further rounds once ``budget_s`` (by
    ``timer``) has passed since the start. ``throughput``: the same placements as a workload="throughput" load plans
    them (index for index); each one timed above whose batch took at most ``THROUGHPUT_WITHIN`` times the fastest's
    is then opened that way and its long rows timed as many rounds, spread over its parallel requests (``row_s``).
    """
    if throughput and len(throughput) != len(candidates):
        raise ValueError(f"{len(throughput)} throughput placements for {len(candidates)} candidates: one each")
    if not candidates:
        raise ValueError("no CPU placement to measure: the folder has no model file that runs on this CPU")
    if tokenizer is None:
        tokenizer = Tokenizer.for_spec(folder, spec)
    say = log or (lambda _: None)
    probes = probe_batches(tokenizer, spec.kind)
    shapes = timing_batches(tokenizer, spec.kind, spec.max_length)
    rank = _ranker(preferred)
    ranked_by = RANKED_SHAPES[spec.kind]

    def rows(backend: Backend) -> np.ndarray:
        outs = [np.asarray(backend.run(batch), np.float32) for batch in probes]
        if spec.kind == "embedder":
            return np.concatenate([l2_normalize(pool(o, b["attention_mask"], spec.pooling)) for o, b in zip(outs, probes)])
        logits = np.concatenate([o.reshape(len(o), -1)[:, 0] for o in outs]).reshape(len(PROBE_QUERIES), -1)
        return logits - logits.mean(axis=1, keepdims=True)  # per query: the order and spacing of its scores

    def timed_rows(i: int) -> list[float]:
        """Open candidate i as a throughput load, warm it, time its long rows (seconds per row, one per round)."""
        backend = backend_of[i] = opener(folder, throughput[i])
        workers = max(1, int(getattr(backend, "parallel_requests", 1)))
        rows = max(len(shapes["docs"]["input_ids"]), workers)
        chunks = [{name: np.repeat(array[:1], len(part), axis=0) for name, array in shapes["docs"].items()}
                  for part in np.array_split(np.arange(rows), workers)]
        with ThreadPoolExecutor(workers, thread_name_prefix="granite-rt-tune") as pool:
            for _ in range(WARMUP_RUNS):
                list(pool.map(backend.run, chunks))
            times = []
            for _ in samples[i]:
                before = timer()
                list(pool.map(backend.run, chunks))
                times.append((timer() - before) / rows)
        return times

    def timed_side_by_side(i: int) -> list[float]:
        """Open candidate i again; a call of several long-document batches side by side over one threaded batch
        after another, per round (``SIDE_BY_SIDE_ROUNDS``, and as many again while they say it loses, up to
        ``SIDE_BY_SIDE_LOOKS`` times; which goes first alternates), each way timed after an untimed run of itself."""
        backend = backend_of[i] = opener(folder, candidates[i])
        side = backend.side_by_side
        batches = [shapes["docs"]] * (SIDE_BY_SIDE_BATCHES * side.workers)
        with ThreadPoolExecutor(side.workers, thread_name_prefix="granite-rt-tune") as pool:
            def in_turn() -> None:
                for batch in batches:
                    backend.run(batch)

            def beside() -> None:
                list(pool.map(side.run, batches))

            for _ in range(WARMUP_RUNS):  # the first side-by-side run opens the one-thread sibling
                backend.run(shapes["docs"])
                list(pool.map(side.run, batches[:side.workers]))
            ratios: list[float] = []
            for _ in range(SIDE_BY_SIDE_LOOKS):
                if ratios and not loses_side_by_side(*side_by_side_summary(ratios)):
                    break
                for n in range(len(ratios), len(ratios) + SIDE_BY_SIDE_ROUNDS):
                    seconds = {}
                    for way in (in_turn, beside) if n % 2 == 0 else (beside, in_turn):
                        # Untimed first, so each way is timed as it runs call after call: a side-by-side call right
                        # after threaded runs was slower than the next while onnxruntime's workers spun ~40 ms after
                        # each run (97m INT8, two batches a call, Zen 4, 2026-12-08 00:00 UTC: 4 x 192 tokens 0.251
                        # vs 0.206 s, 2 x 384 0.223 vs 0.188 s), and three tunes at 23:55-00:00 turned side by side
                        # off at 1.07-1.16x for it. The backend now stops them (backends/onnxruntime.py); the untimed
                        # run keeps any such switch cost out of the ratio.
                        way()
                        before = timer()
                        way()
                        seconds[way] = timer() - before
                    ratios.append(seconds[beside] / seconds[in_turn])
        return ratios

    def timed_round(i: int) -> None:
        sample: dict[str, list[float]] = {"query": [], "docs": []}
        for shape, batch in shapes.items():
            for _ in range(CALLS[shape]):
                before = timer()
                backend_of[i].run(batch)
                sample[shape].append(timer() - before)
        samples[i].append(sample)

    def warm(i: int) -> None:
        for _ in range(WARMUP_RUNS):  # untimed: first runs of a shape compile kernels
            for batch in shapes.values():
                backend_of[i].run(batch)

    def clearly_behind(i: int) -> bool:
        """i is more than CLEAR (widened by both placements' spread) slower than the fastest so far."""
        return best is not None and best != i and math.log(_ratio(samples[i], samples[best], ranked_by)) > (
            math.log(1 + CLEAR) + _spread(samples[i]) + _spread(samples[best]))

    def more_rounds(i: int) -> None:
        while len(samples[i]) < rounds and timer() - start <= budget_s and not clearly_behind(i):
            timed_round(i)

    backend_of: dict[int, Backend] = {}          # the one open placement
    samples: dict[int, list[dict[str, list[float]]]] = {}   # per placement, its timed rounds
    checks: dict[int, Fidelity] = {}
    checked_by: dict[int, str] = {}
    errors: dict[int, str] = {}
    row_times: dict[int, list[float]] = {}      # per placement, seconds per long row as a throughput load
    side_by_side: set[int] = set()               # placements that run a call of several batches side by side
    throughput_errors: dict[int, str] = {}
    reference: int | None = None
    reference_rows: np.ndarray | None = None
    ranked: np.ndarray | None = None             # rerankers: the probe queries fp32 separates (ranked_rows)
    best: int | None = None                      # the fastest placement so far (closed; its rounds are kept)
    first: int | None = None                     # the first one timed: nothing to compare it with, one round
    pending = list(range(len(candidates)))
    start = timer()
    while pending:
        fp32 = [j for j in pending if candidates[j].dtype == "fp32"] if reference is None else []
        if fp32:  # no reference yet: onnxruntime fp32 first, the file the export checked against torch
            i = min(fp32, key=lambda j: (candidates[j].backend != "onnx", j))
        else:
            i = min(pending, key=lambda j: (rank(candidates[j]), j))
        pending.remove(i)
        placement = candidates[i]
        gated = None if fp32 else gate_fidelity(placement)
        if gated is not None:
            checks[i], checked_by[i] = gated, GATE
        try:
            if gated is None or gated.passed:
                backend_of[i] = opener(folder, placement)
            if fp32:
                reference, reference_rows = i, rows(backend_of[i])
                ranked = None if spec.kind == "embedder" else ranked_rows(reference_rows)
            elif gated is None and reference_rows is not None:
                checks[i] = fidelity(reference_rows, rows(backend_of[i]), ranked)
            if i in checks and not checks[i].passed:
                say(f"{label(placement)}: outside the fidelity bounds ({describe_fidelity(asdict(checks[i]))}"
                    f"{', ' + GATE if gated else ''}), not timed")
                continue
            warm(i)
            samples[i] = []
            timed_round(i)
            if best is None:
                first = best = i  # its further rounds wait until there is something to compare them with
            else:
                more_rounds(i)
            if getattr(backend_of[i], "side_by_side", None) is not None:
                side_by_side.add(i)
            if _ratio(samples[i], samples[best], ranked_by) < 1:
                best = i
            say(f"timed {label(placement)} ({placement.artifact.path}): {len(samples[i])} round(s)"
                + (f", {_ratio(samples[i], samples[best], ranked_by):.3f}x the time of {label(candidates[best])}"
                   if best != i else ", the fastest so far"))
        except Exception as exc:  # noqa: BLE001 - a placement that cannot run here is reported, not fatal
            errors[i] = f"{type(exc).__name__}: {one_line(exc, 300)}"
            samples.pop(i, None)  # (a reference that fails later keeps its probe outputs: they were computed)
            say(f"{label(placement)} failed: {errors[i]}")
        finally:
            _close(backend_of, i)
    if first is not None and len(samples) > 1 and timer() - start <= budget_s and not clearly_behind(first):
        # close to the fastest (the fp32 reference seldom is): opened again for the rounds a comparison needs
        try:
            backend_of[first] = opener(folder, candidates[first])
            warm(first)
            more_rounds(first)
            if _ratio(samples[first], samples[best], ranked_by) < 1:
                best = first
            say(f"timed {label(candidates[first])} again: {len(samples[first])} round(s)")
        except Exception as exc:  # noqa: BLE001 - failed while timed, as in the loop above: reported, not chosen
            errors[first] = f"{type(exc).__name__}: {one_line(exc, 300)}"
            del samples[first]
            anyone = samples[next(iter(samples))]
            best = min(samples, key=lambda j: _ratio(samples[j], anyone, ranked_by))
            say(f"{label(candidates[first])} failed when opened again: {errors[first]}")
        finally:
            _close(backend_of, first)
    if throughput and samples:
        fastest_docs = min(_median(samples[j], "docs") for j in samples)
        for i in sorted(samples, key=lambda j: (rank(candidates[j]), j)):
            slower = _median(samples[i], "docs") / fastest_docs
            if slower > THROUGHPUT_WITHIN:
                say(f"{label(candidates[i])}: not timed as a throughput load (its batch took {slower:.2f}x the "
                    f"fastest's)")
                continue
            try:
                row_times[i] = timed_rows(i)
                say(f"timed {label(candidates[i])} as a throughput load: {np.median(row_times[i]) * 1e3:.1f} ms per row")
            except Exception as exc:  # noqa: BLE001 - this mode alone cannot run: not ranked for it
                throughput_errors[i] = f"{type(exc).__name__}: {one_line(exc, 300)}"
                say(f"{label(candidates[i])} as a throughput load failed: {throughput_errors[i]}")
            finally:
                _close(backend_of, i)
    relative = {i: _ratio(rounds_, samples[best], ranked_by) for i, rounds_ in samples.items()} if best is not None else {}
    fastest = min(relative.values(), default=1.0)  # 1.0 unless best failed later
    results = []
    for i, placement in enumerate(candidates):
        check = checks.get(i)
        fid = asdict(check) if check else None
        by = checked_by.get(i, "")
        if i in errors:
            results.append(Measured(identity(placement), fidelity=fid, passed=False, error=errors[i], checked_by=by))
        elif i not in samples:   # outside the bounds: never timed
            results.append(Measured(identity(placement), fidelity=fid, passed=False, checked_by=by))
        else:
            results.append(Measured(identity(placement), _median(samples[i], "query"), _median(samples[i], "docs"),
                                    fid, passed=check is None or check.passed, relative=relative[i] / fastest,
                                    rounds=len(samples[i]), checked_by=by,
                                    row_s=float(np.median(row_times[i])) if i in row_times else None,
                                    throughput_error=throughput_errors.get(i)))
    decision = Decision(key=key, kind=spec.kind,
                        measured_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        host=host.cpu_facts(), libraries=library_versions(),
                        shapes={"query_tokens": int(shapes["query"]["input_ids"].shape[1]),
                                "docs": int(shapes["docs"]["input_ids"].shape[0]),
                                "doc_tokens": int(shapes["docs"]["input_ids"].shape[1])},
                        results=tuple(results),
                        reference=label(candidates[reference]) if reference is not None else None,
                        preferred=tuple(preferred), preferred_throughput=tuple(preferred_throughput))
    onnx = decision.best("onnx")  # the latency choice, where it is onnxruntime's: does side by side pay here?
    i = next((j for j, r in enumerate(results) if r is onnx), None)
    if i not in side_by_side or onnx is not decision.best():
        return decision
    try:
        ratios = timed_side_by_side(i)
    except Exception as exc:  # noqa: BLE001 - it stays on, as the built-in rule has it
        say(f"{label(candidates[i])}: a call of several batches side by side failed: {one_line(exc, 300)}")
        return decision
    finally:
        _close(backend_of, i)
    median, slower, rounds_ = side_by_side_summary(ratios)
    results[i] = replace(onnx, side_by_side=median, side_by_side_slower=slower, side_by_side_rounds=rounds_)
    say(f"timed {label(candidates[i])} with a call of several batches side by side: {results[i].side_by_side_note}")
    return replace(decision, results=tuple(results))


def gate_fidelity(placement: Placement) -> Fidelity | None:
    """The INT8 gate's figures from the manifest as this placement's fidelity: only for dtype="int8" (what the
    gate ran) and only when they are cosines (an embedder's; a reranker's gate ranks, so it is measured here)."""
    figures = dict(placement.artifact.gate)
    if placement.dtype != "int8" or "mean_cosine" not in figures or "p1_cosine" not in figures:
        return None
    return Fidelity(figures["mean_cosine"], figures["p1_cosine"], figures.get("min_cosine", figures["p1_cosine"]))


def _ranker(preferred: Sequence[str]) -> Callable[[Placement], int]:
    """A placement's place in the built-in rule's order (``label``s); placements it does not list come after."""
    order = {name: n for n, name in enumerate(preferred)}
    return lambda placement: order.get(label(placement), len(order))


def _median(rounds_: Sequence[Mapping[str, list[float]]], shape: str) -> float:
    return float(np.median([t for r in rounds_ for t in r[shape]]))


def _spread(rounds_: Sequence[Mapping[str, list[float]]]) -> float:
    """How far the load moved one placement's query calls (log of the 2nd largest over the 2nd smallest of its
    last round's): small on a quiet machine, more where other jobs share the cores."""
    calls = sorted(rounds_[-1]["query"])
    return math.log(max(calls[-2], 1e-12) / max(calls[1], 1e-12)) if len(calls) >= 4 else 0.0


def _ratio(one: Sequence[Mapping[str, list[float]]], other: Sequence[Mapping[str, list[float]]],
           shapes: Sequence[str]) -> float:
    """Geometric mean over ``shapes`` of the median time of ``one`` over that of ``other``."""
    return math.prod(max(_median(one, s), 1e-12) / max(_median(other, s), 1e-12) for s in shapes) ** (1 / len(shapes))


def _close(opened: dict[int, Backend], i: int) -> None:
    """Drop a placement's session and hand its memory back before the next one opens."""
    if opened.pop(i, None) is not None:
        gc.collect()
        host.trim_heap()


def key_for(folder: Path, artifacts: Sequence[Any]) -> str:
    """``decision_key`` of a model folder: every artifact's identity (manifest sha256, else path, size, mtime)."""
    return decision_key([f"{a.backend}:{a.path}:{devices.artifact_key(a, folder)}" for a in artifacts])


def stored(folder: Path, spec: Any, cache_dir: Path | None) -> Decision | None:
    """The decision stored for this folder on this machine, if any (what a ``dtype="auto"`` load consults)."""
    return load_decision(cache_dir, key_for(folder, spec.artifacts))


def tune_folder(folder: Path, spec: Any, cache_dir: Path | None, *, inventory: Any = None,
                opener: Opener | None = None, threads: int | None = None, timer: Callable[[], float] = time.perf_counter,
                budget_s: float = 30.0, log: Callable[[str], None] | None = None) -> tuple[Decision, Path | None]:
    """Measure every CPU placement of ``folder`` (``devices.cpu_candidates``) and store the decision."""
    if opener is None:
        def opener(path: Path, placement: Placement) -> Backend:
            return devices.open_verified(path, placement, threads=threads)
    inventory = inventory or devices.probe()
    candidates = devices.cpu_candidates(spec, folder=folder, inventory=inventory, cache_dir=cache_dir)
    throughput = devices.cpu_candidates(spec, folder=folder, inventory=inventory, cache_dir=cache_dir,
                                        workload="throughput")
    decision = measure(folder, spec, candidates, opener, key=key_for(folder, spec.artifacts), timer=timer,
                       budget_s=budget_s, preferred=builtin_order(spec, folder, inventory, cache_dir),
                       preferred_throughput=builtin_order(spec, folder, inventory, cache_dir, "throughput"),
                       throughput=throughput, log=log)
    return decision, save_decision(cache_dir, decision)


def builtin_order(spec: Any, folder: Path, inventory: Any, cache_dir: Path | None,
                  workload: str = "latency") -> tuple[str, ...]:
    """The CPU placements a ``dtype="auto"`` load for ``workload`` would try without a decision, first choice first
    (``label``s)."""
    try:
        planned = devices.select_placements(spec, device="cpu", folder=folder, workload=workload, kind=spec.kind,
                                            inventory=inventory, cache_dir=cache_dir)
    except (ValueError, GraniteRTError):  # nothing the rule would run: no preference
        return ()
    return tuple(dict.fromkeys(label(p) for p in planned))


def format_decision(decision: Decision, saved: Path | None) -> str:
    """The ``granite-rt tune`` table: each placement's medians, relative time and fidelity, the choice, where
    it is stored."""
    best, batches = decision.best(), decision.best(workload="throughput")
    shapes = decision.shapes
    lines = [f"measured {decision.measured_at} on {decision.host['cpu']} ({decision.kind}; fidelity vs "
             f"{decision.reference or 'nothing: no fp32 file'}, bounds mean >= {MEAN_COSINE}, p1 >= {P1_COSINE}; "
             f"times: medians, relative = geometric mean vs the fastest, ties within {TIE:.0%} go to the built-in rule's "
             f"{decision.preferred[0] if decision.preferred else 'choice'}"
             + (f", for throughput {decision.rule_order('throughput')[0]}"
                if decision.rule_order("throughput")[:1] != decision.preferred[:1] else "") + ")",
             f"  {'placement':<20} {'query (' + str(shapes['query_tokens']) + ' tok)':>16} "
             f"{str(shapes['docs']) + ' x ' + str(shapes['doc_tokens']) + ' tok':>14} {'relative':>9} "
             f"{'throughput load':>16} {'rounds':>6}  fidelity"]
    for r in decision.results:
        if r.error:
            lines.append(f"  {r.name:<20} failed: {r.error}")
            continue
        fid = (describe_fidelity(r.fidelity, precise=True) if r.fidelity else "reference"
               if decision.reference == r.name else "not checked") + (f" ({GATE})" if r.checked_by else "")
        if r.relative is None:
            lines.append(f"  {r.name:<20} {'not timed':>16} {'':>14} {'':>9} {'':>16} {'':>6}  {fid}  (outside the "
                         "bounds: never chosen)")
            continue
        mark = ("  <- chosen" + (" (workload='latency')" if batches is not best else "") if r is best
                else "  <- chosen for workload='throughput'" if r is batches else "")
        per_row = (f"{r.row_s * 1e3:9.1f} ms/row" if r.row_s is not None
                   else f"{'failed' if r.throughput_error else 'not timed':>16}")
        lines.append(f"  {r.name:<20} {r.query_s * 1e3:13.1f} ms {r.docs_s:12.3f} s {r.relative:8.2f}x "
                     f"{per_row} {r.rounds:>6}  {fid}{mark}"
                     + (f"\n  {'':<20} as a throughput load: {r.throughput_error}" if r.throughput_error else "")
                     + (f"\n  {'':<20} a call of several batches side by side: {r.side_by_side_note}"
                        + (f" (more than {TIE:.0%} slower: off)" if r.one_batch_at_a_time else "")
                        if r.side_by_side is not None else ""))
    if any(r.row_s is not None for r in decision.results) and any(
            r.relative is not None and r.row_s is None and not r.throughput_error for r in decision.results):
        lines.append(f"  throughput load 'not timed': its batch took more than {THROUGHPUT_WITHIN}x the fastest's, "
                     "too slow to be the throughput choice")
    lines.append(f"decision stored in {saved}" if saved else
                 "decision not stored (GRANITE_RT_CACHE=off or the cache is not writable)")
    return "\n".join(lines)
