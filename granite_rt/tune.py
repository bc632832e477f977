"""Measured placement: time every CPU placement a model folder allows here, keep the fastest faithful one.

No rule written from one CPU holds on the next: on a 2-core AVX2-only Zen 3 onnxruntime INT8 was the
fastest path in every workload, on a 2-core AVX-512 VNNI + BF16 Zen 4 OpenVINO's INT8 IR with a bf16
hint for its unquantized ops was (bench/README.md). ``granite-rt tune MODEL`` and
``Embedder/Reranker(..., tune=True)`` therefore measure:

1. every CPU placement ``devices.cpu_candidates`` plans for the folder (each backend × fp32 / bf16 /
   int8 / int8+bf16 it can run here) is opened with ``devices``' opener;
2. each is checked against the fp32 placement on a small probe set (``fidelity``: mean cosine ≥ 0.99,
   p1 ≥ 0.97, the bounds of the INT8 gate); one that misses them is never chosen;
3. one short query (5 calls) and a batch of long documents are timed, every candidate in turn, a few
   rounds (medians), within ``budget_s``; every candidate stays open meanwhile (2.3 GB peak for the six
   placements of the 97m shape), so the rounds compare them under the same machine load;
4. the fastest by the geometric mean of its two times relative to the best is stored in
   ``<cache>/tune/<key>.json``, keyed by CPU model + flags, library versions and the model files.

``dtype="auto"`` loads use a stored decision (``info["why"]`` says "measured on this machine …"),
else the built-in rules; a plain load never measures. ``GRANITE_RT_CACHE=off`` keeps decisions off
disk (``tune=True`` then measures at every load).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from granite_rt import devices, host
from granite_rt.backends.base import Backend, Placement
from granite_rt.batching import pad_batch
from granite_rt.pooling import l2_normalize, pool
from granite_rt.tokenize import Tokenizer

DECISION_VERSION = 1
# The INT8 gate's bounds (issue 17), applied to every placement that is not the fp32 reference.
MEAN_COSINE, P1_COSINE = 0.99, 0.97
# Timed shapes: one short query; a batch of long documents (fewer for rerankers: 22 layers at hidden 768).
QUERY = "how do boundary layers behave in hypersonic flow?"
DOC_TOKENS = 384
DOCS = {"embedder": 4, "reranker": 2}
CALLS = {"query": 5, "docs": 1}  # timed calls per shape per round: a query is short and noisier
LIBRARIES = ("granite_rt", "onnxruntime", "openvino", "tokenizers", "numpy")           # import names
DISTRIBUTIONS = ("granite-rt", "onnxruntime", "openvino", "tokenizers", "numpy")        # and what pip calls them

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
    """How close a placement's outputs are to the fp32 placement's on the probe set (cosine per row)."""

    mean: float
    p1: float
    minimum: float

    @property
    def passed(self) -> bool:
        return self.mean >= MEAN_COSINE and self.p1 >= P1_COSINE


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> Fidelity:
    """Cosine of each row of ``candidate`` to the same row of ``reference``: mean, 1st percentile, min.

    Rows are pooled vectors (embedders) or one query's centred logits over its passages (rerankers,
    ``probe_outputs``). The one place to swap in the INT8 gate's measure when it lands.
    """
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"outputs differ in shape: {cand.shape} vs the reference's {ref.shape}")
    with np.errstate(invalid="ignore"):
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = np.where(norms > 0, (ref * cand).sum(axis=1) / np.maximum(norms, 1e-30), 0.0)
    cos = np.where(np.isfinite(cand).all(axis=1) & np.isfinite(cos), cos, -1.0)  # NaN/inf rows: as far as it gets
    return Fidelity(float(cos.mean()), float(np.percentile(cos, 1)), float(cos.min()))


def label(placement: Placement) -> str:
    """``"openvino int8+bf16"``: how tables and ``info["why"]`` name a CPU placement."""
    return f"{placement.backend} {placement.dtype}"


def identity(placement: Placement) -> dict[str, str]:
    """What a stored decision records of a placement: enough to find it again among the candidates."""
    return {"backend": placement.backend, "dtype": placement.dtype, "file": placement.artifact.path}


# ---- the stored decision ------------------------------------------------------------------------------

def host_facts(cpuinfo: Path = host.CPUINFO) -> dict[str, Any]:
    """CPU model and every CPU flag (host.py's reading of /proc/cpuinfo; what platform says elsewhere)."""
    return {"cpu": host.cpu_model(cpuinfo), "machine": platform.machine(), "flags": sorted(host.cpu_flags(cpuinfo))}


def library_identity() -> dict[str, str]:
    """Each library that decides the speed, by its package file's path, size and mtime: an upgrade rewrites it.

    Found without importing anything (importlib.metadata alone costs 60 ms of a cold start); the versions
    are recorded, at tune time only, by ``library_versions``.
    """
    out = {}
    for module in LIBRARIES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            st = os.stat(spec.origin)
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
    payload = json.dumps({"version": DECISION_VERSION, "host": dict(host_ or host_facts()),
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

    @property
    def name(self) -> str:
        return f"{self.placement['backend']} {self.placement['dtype']}"

    @property
    def eligible(self) -> bool:
        return self.error is None and self.passed and self.query_s is not None and self.docs_s is not None


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

    def best(self, backend: str = "auto") -> Measured | None:
        """The eligible result with the lowest geometric mean of its times relative to the best of each shape."""
        pool = [r for r in self.results if r.eligible and backend in ("auto", r.placement["backend"])]
        if not pool:
            return None
        fastest_query, fastest_docs = min(r.query_s for r in pool), min(r.docs_s for r in pool)
        return min(pool, key=lambda r: (r.query_s / fastest_query * r.docs_s / fastest_docs) ** 0.5)

    def why(self, backend: str = "auto") -> str:
        """``info["why"]`` of a load that follows this decision."""
        best = self.best(backend)
        if best is None:
            return "no measured placement passed"
        checked = (f"mean cosine {best.fidelity['mean']:.5f} to {self.reference}" if best.fidelity
                   else "the fp32 reference" if self.reference and best.name == self.reference
                   else "fidelity not checked: the folder has no fp32 file")
        others = sorted((r for r in self.results if r is not best), key=lambda r: r.name)
        return (f"measured on this machine {self.measured_at} (granite-rt tune): fastest of {len(self.results)} CPU "
                f"placements within the fidelity bounds: query {best.query_s * 1e3:.1f} ms, "
                f"{self.shapes['docs']} × {self.shapes['doc_tokens']}-token batch {best.docs_s:.3f} s, {checked}"
                + (f"; others: {'; '.join(_brief(r) for r in others)}" if others else ""))

    def choice(self, backend: str = "auto") -> dict[str, str] | None:
        """The best placement for ``devices.select_placements(tuned=...)``: backend, dtype, file and why."""
        best = self.best(backend)
        return None if best is None else {**best.placement, "why": self.why(backend)}

    def to_json(self) -> str:
        return json.dumps({"version": DECISION_VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        data = json.loads(text)
        if data.pop("version", None) != DECISION_VERSION:
            raise ValueError("decision written by another granite-rt version")
        data["results"] = tuple(Measured(**r) for r in data["results"])
        return cls(**data)


def _brief(r: Measured) -> str:
    if r.error:
        return f"{r.name} failed ({r.error[:80]})"
    figures = f"{r.name} {r.query_s * 1e3:.1f} ms / {r.docs_s:.3f} s"
    return figures + ("" if r.passed else f" (fidelity: mean {r.fidelity['mean']:.4f}, p1 {r.fidelity['p1']:.4f})")


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
    """The two timed shapes: one short query, and DOCS[kind] documents of DOC_TOKENS tokens (real text ids)."""
    long_text = " ".join(PROBE_PASSAGES * 12)
    if kind == "embedder":
        query, doc = tokenizer.encode([QUERY])[0], tokenizer.encode([long_text])[0]
    else:
        query, doc = tokenizer.encode_pairs([(QUERY, PROBE_PASSAGES[0])])[0], tokenizer.encode_pairs([(QUERY, long_text)])[0]
    tokens = min(DOC_TOKENS, max_length, len(doc.ids))
    docs = pad_batch([doc], tokenizer.pad_id)
    docs = {name: np.repeat(array[:, :tokens], DOCS[kind], axis=0) for name, array in docs.items()}
    return {"query": pad_batch([query], tokenizer.pad_id), "docs": docs}


def measure(folder: Path, spec: Any, candidates: Sequence[Placement], opener: Opener, *, key: str,
            tokenizer: Any = None, timer: Callable[[], float] = time.perf_counter, rounds: int = 3,
            budget_s: float = 30.0, log: Callable[[str], None] | None = None) -> Decision:
    """Open, check and time every candidate (see the module docstring); the Decision, not yet stored.

    ``opener(folder, placement)`` returns a Backend; ``timer`` is read around each timed call (tests pass
    fakes of both). The fp32 candidate (onnxruntime's first) is the fidelity reference. Rounds stop early, after the
    first complete one, once ``budget_s`` (by ``timer``) has passed.
    """
    if not candidates:
        raise ValueError("no CPU placement to measure: the folder has no model file that runs on this CPU")
    if tokenizer is None:
        tokenizer = Tokenizer(folder, spec.max_length, do_lower_case=spec.do_lower_case,
                              truncation_side=spec.truncation_side)
    say = log or (lambda _: None)
    probes = probe_batches(tokenizer, spec.kind)
    shapes = timing_batches(tokenizer, spec.kind, spec.max_length)

    def rows(backend: Backend) -> np.ndarray:
        outs = [np.asarray(backend.run(batch), np.float32) for batch in probes]
        if spec.kind == "embedder":
            return np.concatenate([l2_normalize(pool(o, b["attention_mask"], spec.pooling)) for o, b in zip(outs, probes)])
        logits = np.concatenate([o.reshape(len(o), -1)[:, 0] for o in outs]).reshape(len(PROBE_QUERIES), -1)
        return logits - logits.mean(axis=1, keepdims=True)  # per query: the order and spacing of its scores

    opened: dict[int, Backend] = {}
    outputs: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, placement in enumerate(candidates):
        try:
            opened[i] = opener(folder, placement)
            outputs[i] = rows(opened[i])
            for batch in shapes.values():  # untimed: first runs of a shape compile kernels
                opened[i].run(batch)
            say(f"opened {label(placement)} ({placement.artifact.path})")
        except Exception as exc:  # noqa: BLE001 - a placement that cannot run here is reported, not fatal
            errors[i] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            opened.pop(i, None)
            say(f"{label(placement)} failed: {errors[i]}")
    fp32 = sorted((i for i in outputs if candidates[i].dtype == "fp32"), key=lambda i: candidates[i].backend != "onnx")
    reference = fp32[0] if fp32 else None  # onnxruntime fp32 first: the file the export checked against torch
    times: dict[int, dict[str, list[float]]] = {i: {"query": [], "docs": []} for i in opened}
    start = timer()
    order = list(opened)
    for round_index in range(rounds):
        shift = round_index % len(order) if order else 0
        for i in order[shift:] + order[:shift]:
            for shape, batch in shapes.items():
                for _ in range(CALLS[shape]):
                    before = timer()
                    opened[i].run(batch)
                    times[i][shape].append(timer() - before)
        if timer() - start > budget_s:
            break
    results = []
    for i, placement in enumerate(candidates):
        if i in errors:
            results.append(Measured(identity(placement), error=errors[i], passed=False))
            continue
        check = None if reference is None or i == reference else fidelity(outputs[reference], outputs[i])
        results.append(Measured(identity(placement), float(np.median(times[i]["query"])),
                                float(np.median(times[i]["docs"])), asdict(check) if check else None,
                                passed=check is None or check.passed))
    return Decision(key=key, kind=spec.kind, measured_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    host=host_facts(), libraries=library_versions(),
                    shapes={"query_tokens": int(shapes["query"]["input_ids"].shape[1]),
                            "docs": int(shapes["docs"]["input_ids"].shape[0]),
                            "doc_tokens": int(shapes["docs"]["input_ids"].shape[1]),
                            "rounds": len(times[order[0]]["docs"]) if order else 0},
                    results=tuple(results), reference=label(candidates[reference]) if reference is not None else None)


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
    candidates = devices.cpu_candidates(spec, folder=folder, inventory=inventory, cache_dir=cache_dir)
    decision = measure(folder, spec, candidates, opener, key=key_for(folder, spec.artifacts), timer=timer,
                       budget_s=budget_s, log=log)
    return decision, save_decision(cache_dir, decision)


def format_decision(decision: Decision, saved: Path | None) -> str:
    """The ``granite-rt tune`` table: each placement's medians and fidelity, the choice, where it is stored."""
    best = decision.best()
    shapes = decision.shapes
    lines = [f"measured {decision.measured_at} on {decision.host['cpu']} ({decision.kind}; "
             f"{shapes['rounds']} rounds; fidelity vs {decision.reference or 'nothing: no fp32 file'}, "
             f"bounds mean >= {MEAN_COSINE}, p1 >= {P1_COSINE})",
             f"  {'placement':<20} {'query (' + str(shapes['query_tokens']) + ' tok)':>16} "
             f"{str(shapes['docs']) + ' x ' + str(shapes['doc_tokens']) + ' tok':>14}  fidelity"]
    for r in decision.results:
        if r.error:
            lines.append(f"  {r.name:<20} failed: {r.error}")
            continue
        fid = (f"mean {r.fidelity['mean']:.5f}, p1 {r.fidelity['p1']:.5f}" if r.fidelity else "reference"
               if decision.reference == r.name else "not checked")
        mark = "  <- chosen" if r is best else ("" if r.passed else "  (outside the bounds: never chosen)")
        lines.append(f"  {r.name:<20} {r.query_s * 1e3:13.1f} ms {r.docs_s:12.3f} s  {fid}{mark}")
    lines.append(f"decision stored in {saved}" if saved else
                 "decision not stored (GRANITE_RT_CACHE=off or the cache is not writable)")
    return "\n".join(lines)
