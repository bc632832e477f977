"""Measured placement (granite_rt.tune): fidelity gate, choice, stored decision, and loads that follow it.

No timing assertions: the timer is a fake clock that each fake (or wrapped) backend advances by the
seconds scripted for its placement, so every choice checked here follows from known inputs.
"""

from __future__ import annotations

import itertools
import threading
import json
import shutil
import weakref
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from granite_rt import Embedder, Reranker, devices, host, tune
from granite_rt.backends.base import Artifact, EngineInventory, Placement, SideBySide
from granite_rt.cli import main as cli_main
from granite_rt.model_folder import load_spec

ONNX32 = Artifact("onnx/model.onnx", "onnx", "fp32")
ONNX8 = Artifact("onnx/model_qint8.onnx", "onnx", "int8")
OV32 = Artifact("openvino/openvino_model.xml", "openvino", "fp32")
OV8 = Artifact("openvino/openvino_model_qint8_quantized.xml", "openvino", "int8")


class Clock:
    """A fake ``timer``: advances only when a fake backend 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _hidden(ids: np.ndarray, width: int = 16) -> np.ndarray:
    """Deterministic token vectors from the ids: what the 'fp32' fake computes."""
    return np.sin(ids[..., None] * (np.arange(width) + 1) * 0.37).astype(np.float32)


class FakeBackend:
    """Returns ``_hidden`` (plus ``noise``) and advances the clock by its scripted seconds per shape."""

    parallel_requests = 1

    def __init__(self, placement: Placement, clock: Clock, query_s: float, docs_s: float, noise: float = 0.0,
                 jitter: float = 0.0, rng=None, cold_docs_runs: int = 0):
        self.placement, self.clock, self.query_s, self.docs_s, self.noise = placement, clock, query_s, docs_s, noise
        self.cold_docs_runs = cold_docs_runs   # the first runs of the docs shape take 3x (a fresh compile)
        self.input_names = ("input_ids", "attention_mask")
        self.rng = np.random.default_rng(0)
        self.jitter, self.jitter_rng = jitter, rng or np.random.default_rng(0)
        self.query_runs = 0

    def run(self, inputs):
        ids = inputs["input_ids"]
        self.query_runs += ids.shape[0] == 1
        seconds = self.query_s if ids.shape[0] == 1 else self.docs_s
        if ids.shape[0] > 1 and self.cold_docs_runs > 0:
            self.cold_docs_runs -= 1
            seconds *= 3
        self.clock.now += seconds * (1 + self.jitter * self.jitter_rng.uniform(-1, 1))
        out = _hidden(ids)
        return out + self.noise * self.rng.standard_normal(out.shape).astype(np.float32)

    def describe(self):
        return {}


class ThroughputFake:
    """A placement opened as a throughput load: ``parallel_requests`` runs at once, each advancing the clock by
    its rows × seconds per row over the requests (the runs overlap), and recording the rows it got."""

    def __init__(self, clock: Clock, per_row: float, workers: int) -> None:
        self.clock, self.per_row, self.parallel_requests = clock, per_row, workers
        self.rows: list[int] = []

    def run(self, inputs):
        rows = len(inputs["input_ids"])
        self.rows.append(rows)
        self.clock.now += rows * self.per_row / self.parallel_requests
        return _hidden(inputs["input_ids"])


@dataclass
class FakeEncoding:
    ids: list
    type_ids: list


class FakeTokenizer:
    pad_id = 0

    def encode(self, texts):
        return [FakeEncoding([1 + (zlib.crc32(w.encode()) % 997) for w in t.split()][:600] or [1], [0] * min(len(t.split()), 600) or [0])
                for t in texts]

    def encode_pairs(self, pairs):
        return self.encode([f"{q} {p}" for q, p in pairs])


@dataclass(frozen=True)
class FakeSpec:
    kind: str = "embedder"
    max_length: int = 512
    pooling: tuple = ("cls",)


def _placement(artifact: Artifact, dtype: str | None = None) -> Placement:
    return Placement(artifact.backend, "cpu", dtype or artifact.precision, artifact)


def _measure(scripts: dict[tuple[str, str], tuple[float, float, float]], fail: tuple = (), preferred: tuple = (),
             live: list | None = None, jitter: float = 0.0, seed: int = 0, budget_s: float = 60.0,
             cold_docs_runs: int = 0, throughput: dict[tuple[str, str], tuple[float, int]] | None = None
             ) -> tune.Decision:
    """Run ``tune.measure`` over fake backends: (backend, dtype) -> (query s, docs s, noise), in that order.

    ``live`` collects how many fake backends are alive (not yet garbage) each time one opens; ``jitter``
    scales each run's seconds by a random factor within ±jitter (a machine whose load moves). ``throughput``:
    (backend, dtype) -> (seconds per row, parallel requests) of the placement opened as a throughput load
    (absent: it fails to open so); None: the measurement does not time that mode."""
    clock = Clock()
    artifacts = {"onnx": {"fp32": ONNX32, "int8": ONNX8}, "openvino": {"fp32": OV32, "bf16": OV32, "int8": OV8,
                                                                       "int8+bf16": OV8}}
    candidates = [_placement(artifacts[be][dt], dt) for be, dt in scripts]
    alive = weakref.WeakSet()
    rng = np.random.default_rng(seed)

    def opener(folder, placement):
        if (placement.backend, placement.dtype) in fail:
            raise RuntimeError("plugin refused the model")
        if placement.options == "throughput":
            if (placement.backend, placement.dtype) not in throughput:
                raise RuntimeError("no streams for this one")
            per_row, workers = throughput[placement.backend, placement.dtype]
            return ThroughputFake(clock, per_row, workers)
        q, d, noise = scripts[placement.backend, placement.dtype]
        backend = FakeBackend(placement, clock, q, d, noise, jitter=jitter, rng=rng, cold_docs_runs=cold_docs_runs)
        alive.add(backend)
        if live is not None:
            live.append(len(alive))
        return backend

    twins = [replace(c, options="throughput") for c in candidates] if throughput is not None else ()
    decision = tune.measure(Path("/models/x"), FakeSpec(), candidates, opener, key="k", tokenizer=FakeTokenizer(),
                            timer=clock, preferred=preferred, budget_s=budget_s, throughput=twins)
    if live is not None:
        live.append(len(alive))  # after measuring: nothing left open
    return decision


# ---- fidelity and choice -------------------------------------------------------------------------------

def test_fidelity_passes_identical_rows_and_fails_unrelated_ones():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((50, 32))
    same = tune.fidelity(ref, ref.copy())
    assert same.passed and same.mean == pytest.approx(1.0) and same.minimum == pytest.approx(1.0)
    close = tune.fidelity(ref, ref + 0.02 * rng.standard_normal(ref.shape))
    assert close.passed and 0.99 < close.mean < 1.0
    one_bad = ref.copy()
    one_bad[7] = -one_bad[7]  # one row flipped: the mean may pass, p1 must not
    assert not tune.fidelity(ref, one_bad).passed
    assert not tune.fidelity(ref, rng.standard_normal(ref.shape)).passed
    nan = ref.copy()
    nan[3] = np.nan
    assert tune.fidelity(ref, nan).minimum == -1.0
    with pytest.raises(ValueError, match="shape"):
        tune.fidelity(ref, ref[:10])


def test_reranker_queries_fp32_cannot_rank_are_judged_by_how_far_their_logits_move():
    """A random-weight reranker's logits span < MIN_LOGIT_SPREAD per query: rounding noise is accepted there
    (its cosine is noise), a placement that moves them by their own scale is not."""
    rng = np.random.default_rng(2)
    flat = 0.03 * rng.standard_normal((3, 8))          # spread ~0.1 at most: fp32 does not rank these
    flat -= flat.mean(axis=1, keepdims=True)
    flat[:, 0], flat[:, 1] = 0.02, -0.02               # every row's spread below the bound
    flat = np.clip(flat, -0.045, 0.045)
    ranked = tune.ranked_rows(flat)
    assert not ranked.any()
    noisy = flat + 0.01 * rng.standard_normal(flat.shape)
    cosine_only = tune.fidelity(flat, noisy)
    assert not cosine_only.passed                       # what the tuner did before: bf16-like noise rejected
    judged = tune.fidelity(flat, noisy, ranked)
    assert judged.passed and judged.unranked == 3 and not judged.cosines_judged
    assert judged.unranked_max_diff == pytest.approx(np.abs(noisy - flat).max())
    assert not tune.fidelity(flat, flat + 0.3 * rng.standard_normal(flat.shape), ranked).passed
    broken = flat.copy()
    broken[1, 2] = np.nan
    assert not tune.fidelity(flat, broken, ranked).passed
    # A query fp32 does rank keeps the cosine bound, beside the unranked ones.
    mixed = flat.copy()
    mixed[0] = np.linspace(-1, 1, 8)
    ranked = tune.ranked_rows(mixed)
    assert ranked.tolist() == [True, False, False]
    reversed_first = mixed.copy()
    reversed_first[0] = -mixed[0]
    result = tune.fidelity(mixed, reversed_first, ranked)
    assert not result.passed and result.cosines_judged and result.mean == pytest.approx(-1.0)
    assert "2 queries fp32 cannot rank" in tune.describe_fidelity(asdict(result))


def test_measure_picks_the_fastest_placement_within_the_fidelity_bounds():
    decision = _measure({
        ("onnx", "fp32"): (0.020, 1.00, 0.0),
        ("onnx", "int8"): (0.010, 0.50, 0.01),
        ("openvino", "int8+bf16"): (0.011, 0.40, 0.01),  # fastest overall that is faithful
        ("openvino", "bf16"): (0.005, 0.20, 5.0),        # fastest of all, but its vectors are noise
    })
    by_name = {r.name: r for r in decision.results}
    assert decision.reference == "onnx fp32" and by_name["onnx fp32"].fidelity is None
    assert not by_name["openvino bf16"].passed and by_name["openvino bf16"].fidelity["mean"] < 0.9
    assert by_name["onnx int8"].passed and by_name["openvino int8+bf16"].passed
    assert by_name["onnx int8"].query_s == pytest.approx(0.010) and by_name["onnx int8"].docs_s == pytest.approx(0.50)
    assert decision.best().name == "openvino int8+bf16"   # sqrt(1.1 × 1.0) < sqrt(1.0 × 1.25)
    assert decision.best("onnx").name == "onnx int8"      # backend="onnx" follows the same measurements
    text = tune.format_decision(decision, None)
    assert "openvino int8+bf16" in text.split("<- chosen")[0].splitlines()[-1]
    assert "never chosen" in text and "not stored" in text
    why = decision.why()
    assert why.startswith("measured on this machine") and "openvino bf16" in why and "fidelity" in why


def test_a_placement_that_fails_to_open_is_reported_and_never_chosen():
    decision = _measure({("onnx", "fp32"): (0.02, 1.0, 0.0), ("openvino", "int8"): (0.001, 0.01, 0.0)},
                        fail=(("openvino", "int8"),))
    failed = next(r for r in decision.results if r.name == "openvino int8")
    assert failed.error and "plugin refused" in failed.error and not failed.eligible
    assert decision.best().name == "onnx fp32"


SIX = {("onnx", "fp32"): (0.120, 5.2, 0.0), ("onnx", "int8"): (0.080, 3.7, 0.01),
       ("openvino", "fp32"): (0.270, 5.6, 0.0), ("openvino", "bf16"): (0.190, 3.3, 0.001),
       ("openvino", "int8"): (0.125, 3.7, 0.01), ("openvino", "int8+bf16"): (0.110, 2.0, 0.01)}


class SideBySideFake(FakeBackend):
    """A placement that runs a call of several batches side by side, each such batch advancing the clock by its
    round's entry of ``side_s`` (the runs overlap: their seconds add up as the wall time of the call; the two
    warm-up batches take the first round's), and by ``switch_s`` more in the first such call after threaded runs
    (``switched`` counts those batches)."""

    side_s: tuple = (0.0,)
    switch_s = 0.0
    lock = threading.Lock()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.side_runs = self.switched = self.after_threaded = 0
        self.side_by_side = SideBySide(self._beside, 2)

    def run(self, inputs):
        self.after_threaded = self.side_by_side.workers   # the next side-by-side call's batches pay the switch
        return super().run(inputs)

    def _beside(self, inputs):
        with self.lock:
            round_ = max(0, (self.side_runs - 2) // 4)   # two runs to warm up, then four a round (two untimed)
            self.side_runs += 1
            self.clock.now += self.side_s[round_ % len(self.side_s)]
            if self.after_threaded:
                self.after_threaded -= 1
                self.switched += 1
                self.clock.now += self.switch_s
        return _hidden(inputs["input_ids"])


def _side_by_side_fakes(monkeypatch, side_s: tuple, switch_s: float = 0.0) -> list:
    """Let _measure open SideBySideFakes with these per-round seconds; the list of (backend, dtype, fake) opened."""
    opened = []

    class Fake(SideBySideFake):
        def __init__(self, placement, *args, **kwargs):
            super().__init__(placement, *args, **kwargs)
            self.side_s, self.switch_s = side_s, switch_s
            opened.append((placement.backend, placement.dtype, self))

    monkeypatch.setitem(globals(), "FakeBackend", Fake)       # what _measure's opener opens
    return opened


# onnx int8 (3.7 s a batch) the latency choice: int8+bf16 slower on the batch than in SIX
ONNX_FIRST = {**SIX, ("openvino", "int8+bf16"): (0.110, 4.0, 0.01)}


@pytest.mark.parametrize("side_s,slower,rounds,off", [
    ((2.6,), 0, 5, False),                        # 0.70x in every round: kept on
    ((4.4,), 10, 10, True),                       # 1.19x in every round, looked at twice: off
    ((4.4, 3.0, 4.4, 3.0, 4.4), 3, 5, False),     # median 1.19x, but faster in two rounds of five: noise, kept on
    ((4.4, 4.4, 3.0, 4.4, 4.4), 8, 10, True),     # slower in four of five, and in eight of all ten: off
    ((4.4, 4.4, 3.0, 4.4, 4.4) + (3.0,) * 5, 4, 10, False),  # four of five, but the second look is faster: kept on
])
def test_the_latency_choice_times_a_call_of_several_batches_side_by_side_and_turns_it_off_when_slower(
        monkeypatch, side_s, slower, rounds, off):
    """onnx int8 is the latency choice and runs side by side: it alone is opened again and timed with a call of
    several batches, SIDE_BY_SIDE_ROUNDS same-round ratios; where their median is more than TIE slower in at least
    three rounds of four it gets as many rounds again, and only if all of them together still say so is it turned
    off for the loads that follow."""
    opened = _side_by_side_fakes(monkeypatch, side_s)
    decision = _measure(ONNX_FIRST)
    assert decision.best().name == "onnx int8"
    ratio = float(np.median([side_s[n % len(side_s)] / 3.7 for n in range(rounds)]))
    results = {r.name: r for r in decision.results}
    timed = results.pop("onnx int8")
    assert timed.side_by_side == pytest.approx(ratio)
    assert (timed.side_by_side_slower, timed.side_by_side_rounds) == (slower, rounds)
    assert (tune.SIDE_BY_SIDE_ROUNDS, tune.SIDE_BY_SIDE_LOOKS) == (5, 2)   # what the cases above are written for
    assert all(r.side_by_side is None for r in results.values())   # no other placement is timed so
    assert [(be, dt) for be, dt, fake in opened if fake.side_runs] == [("onnx", "int8")]
    assert len(opened) == 7                                    # six, then the latency choice once more
    note = f"{ratio:.2f}x the time of one after another, slower in {slower} of {rounds} rounds"
    for choice in (decision.choice(), decision.choice("onnx")):
        assert choice["dtype"] == "int8" and (choice.get("side_by_side") == "off") is off
        assert f"side by side {note}" in choice["why"] and ("(so one after another)" in choice["why"]) is off
    table = tune.format_decision(decision, None)
    assert f"a call of several batches side by side: {note}" in table
    assert ("more than 3% slower: off" in table) is off
    assert "side_by_side" not in decision.choice("onnx", "throughput")   # throughput loads: always side by side
    assert tune.Decision.from_json(decision.to_json()) == decision


def test_each_way_is_timed_after_an_untimed_run_of_itself(monkeypatch):
    """The first side-by-side call after threaded runs pays for the switch (here 3 s more a batch: 1.51x where the
    steady way takes 0.70x); the tuner times each way after an untimed run of itself, so it records the steady
    ratio in every round."""
    opened = _side_by_side_fakes(monkeypatch, (2.6,), switch_s=3.0)
    decision = _measure(ONNX_FIRST)
    timed = next(r for r in decision.results if r.name == "onnx int8")
    assert timed.side_by_side == pytest.approx(2.6 / 3.7)
    assert (timed.side_by_side_slower, timed.side_by_side_rounds) == (0, tune.SIDE_BY_SIDE_ROUNDS)
    assert "side_by_side" not in decision.choice()
    fake = next(f for _, _, f in opened if f.side_runs)
    assert fake.switched >= 2 * 3          # the switch was paid (warm-up, then the rounds that time threaded first)


def test_side_by_side_is_not_timed_when_the_latency_choice_is_not_onnxruntimes(monkeypatch):
    """OpenVINO int8+bf16 is the latency choice (SIX): nothing is opened again to time side by side (a
    backend="onnx" load keeps the built-in rule's side by side)."""
    opened = _side_by_side_fakes(monkeypatch, (4.4,))
    decision = _measure(SIX)
    assert decision.best().name == "openvino int8+bf16" and decision.best("onnx").name == "onnx int8"
    assert len(opened) == 6 and not any(fake.side_runs for _, _, fake in opened)
    assert all(r.side_by_side is None for r in decision.results)
    assert "side_by_side" not in decision.choice("onnx") and "side by side" not in decision.choice("onnx")["why"]


def test_placements_are_opened_one_after_another_each_closed_before_the_next():
    live: list[int] = []
    decision = _measure(SIX, live=live)
    assert live == [1] * 6 + [0]               # six opens, each alone; nothing left open afterwards
    assert decision.best().name == "openvino int8+bf16"


def test_the_fastest_faithful_placement_wins_in_any_order_on_a_jittery_machine():
    scripts = dict(SIX)
    scripts["openvino bf16".split()[0], "bf16"] = (0.050, 1.0, 5.0)   # fastest of all, but its vectors are noise
    fastest = "openvino int8+bf16"                                    # 0.110 / 2.0: >= 11 % ahead of the next
    for n, order in enumerate(itertools.permutations(scripts)):
        if n % 37:                                                     # 20 of the 720 orders
            continue
        decision = _measure({k: scripts[k] for k in order}, jitter=0.04, seed=n,
                            preferred=("onnx int8", "openvino int8"))  # a built-in rule that is wrong here
        assert decision.best().name == fastest, order
        by_name = {r.name: r for r in decision.results}
        assert by_name["openvino bf16"].relative is None and not by_name["openvino bf16"].eligible
        assert by_name[fastest].relative == 1.0
        assert all(r.relative > 1.0 for r in decision.results if r.relative is not None and r.name != fastest)


def test_a_clearly_slower_placement_gets_one_round_and_the_others_three():
    decision = _measure({("onnx", "fp32"): (0.10, 1.00, 0.0),    # first: the reference
                         ("openvino", "fp32"): (0.30, 3.00, 0.0),  # 3x the time of the fastest so far: one round
                         ("onnx", "int8"): (0.05, 0.50, 0.0),      # faster: three rounds
                         ("openvino", "int8"): (0.05, 0.52, 0.0)}) # 2 % from onnx int8: three rounds
    by_name = {r.name: r for r in decision.results}
    assert by_name["openvino fp32"].rounds == 1 and by_name["onnx int8"].rounds == 3
    assert by_name["openvino int8"].rounds == 3
    assert by_name["onnx fp32"].rounds == 1    # timed first, with nothing to compare: one round, then 2x behind
    assert by_name["openvino fp32"].relative == pytest.approx(6.0)   # 3x the reference, which is 2x onnx int8
    assert by_name["openvino int8"].relative == pytest.approx((1.04) ** 0.5, rel=1e-6)


def test_the_first_placement_timed_gets_its_other_rounds_at_the_end_only_when_it_is_close():
    """The reference is timed first, with nothing to stop it early: one round; where it ends within CLEAR of the
    fastest it is opened again for the rounds a fair comparison needs."""
    live: list[int] = []
    close = {("onnx", "fp32"): (0.050, 0.50, 0.0), ("onnx", "int8"): (0.050, 0.52, 0.001)}   # fp32 4 % ahead
    decision = _measure(close, live=live)
    by_name = {r.name: r for r in decision.results}
    assert by_name["onnx fp32"].rounds == by_name["onnx int8"].rounds == 3
    assert live == [1, 1, 1, 0] and decision.best().name == "onnx fp32"   # opened twice, never beside another
    assert _measure(close, budget_s=0.0).results[0].rounds == 1     # past the budget: not opened again
    behind = {r.name: r for r in _measure({**close, ("onnx", "int8"): (0.025, 0.25, 0.001)}).results}
    assert behind["onnx fp32"].rounds == 1 and behind["onnx int8"].rounds == 3


def test_warm_up_runs_are_untimed_and_the_budget_stops_extra_rounds():
    scripts = {("onnx", "fp32"): (0.10, 1.0, 0.0), ("onnx", "int8"): (0.05, 0.5, 0.0)}
    ample = {r.name: r for r in _measure(scripts).results}
    assert ample["onnx fp32"].docs_s == pytest.approx(1.0) and ample["onnx int8"].rounds == 3
    spent = {r.name: r for r in _measure(scripts, budget_s=0.0).results}   # past the budget: one round each
    assert spent["onnx fp32"].rounds == spent["onnx int8"].rounds == 1


def test_a_freshly_compiled_placement_is_warm_before_its_first_round():
    # Its first docs run takes 3x (a fresh compile): timed, onnx int8's first round would look 1.22x the reference
    # (1.5x on the batch, even on the query), clearly slower, and it would be stopped there although its batch is
    # twice as fast.
    scripts = {("onnx", "fp32"): (0.10, 1.0, 0.0), ("onnx", "int8"): (0.10, 0.5, 0.0)}
    decision = _measure(scripts, cold_docs_runs=1)
    assert decision.best().name == "onnx int8"
    assert {r.name: r for r in decision.results}["onnx int8"].docs_s == pytest.approx(0.5)


def test_a_noisy_machine_gets_more_rounds_before_a_gap_counts_as_clear():
    scripts = {("onnx", "fp32"): (0.10, 1.0, 0.0), ("onnx", "int8"): (0.13, 1.3, 0.0)}   # 30 % slower
    quiet = {r.name: r for r in _measure(scripts).results}
    assert quiet["onnx int8"].rounds == 1                       # clearly apart on a steady clock
    noisy = {r.name: r for r in _measure(scripts, jitter=0.25).results}
    assert noisy["onnx int8"].rounds > 1                        # calls that vary by ±25 %: more rounds first
    assert noisy["onnx int8"].relative > 1.1


def test_a_tie_within_noise_goes_to_the_builtin_rule_and_a_real_gap_does_not():
    close = {("onnx", "fp32"): (0.10, 1.00, 0.0), ("onnx", "int8"): (0.050, 0.500, 0.0),
             ("openvino", "int8+bf16"): (0.050, 0.510, 0.0)}         # 1 % slower than onnx int8
    assert _measure(close).best().name == "onnx int8"                 # no rule given: the faster
    ruled = _measure(close, preferred=("openvino int8+bf16", "onnx int8"))
    assert ruled.best().name == "openvino int8+bf16"                  # within 3 %: the rule's choice
    assert "within 3% of onnx int8: a tie, so the built-in rule's choice" in ruled.why()
    assert "a tie" not in _measure(close).why()
    assert tune.Decision.from_json(ruled.to_json()).best().name == "openvino int8+bf16"
    assert "ties within 3% go to the built-in rule's openvino int8+bf16" in tune.format_decision(ruled, None)
    gap = dict(close)
    gap["openvino", "int8+bf16"] = (0.050, 0.600, 0.0)                 # 10 % slower: measured beats ruled
    assert _measure(gap, preferred=("openvino int8+bf16", "onnx int8")).best().name == "onnx int8"


def test_a_throughput_tie_goes_to_the_rules_order_for_throughput_loads():
    """On a Zen 4 the rule runs an embedder's latency loads on onnxruntime INT8 and its throughput loads on
    OpenVINO int8+bf16 (devices.Inventory.for_queries): each workload's tie goes to its own rule."""
    close = {("onnx", "fp32"): (0.10, 1.00, 0.0), ("onnx", "int8"): (0.050, 0.505, 0.0),
             ("openvino", "int8+bf16"): (0.050, 0.500, 0.0)}         # 1 % faster on batches than onnx int8
    decision = replace(_measure(close, preferred=("onnx int8", "openvino int8+bf16")),
                                   preferred_throughput=("openvino int8+bf16", "onnx int8"))
    assert decision.best().name == "onnx int8"
    assert decision.best(workload="throughput").name == "openvino int8+bf16"
    again = tune.Decision.from_json(decision.to_json())
    assert again.best(workload="throughput").name == "openvino int8+bf16"
    assert "for throughput openvino int8+bf16" in tune.format_decision(again, None)
    latency_rule_only = replace(decision, preferred=("openvino int8+bf16", "onnx int8"), preferred_throughput=())
    assert latency_rule_only.best(workload="throughput").name == "openvino int8+bf16"   # (): the latency order
    swapped = replace(decision, preferred_throughput=("onnx int8", "openvino int8+bf16"))
    assert swapped.best(workload="throughput").name == "onnx int8"


def test_throughput_loads_are_ranked_by_each_placement_timed_as_a_throughput_load():
    """onnxruntime INT8 is faster on the latency mode's batch, OpenVINO int8+bf16 per row once its streams run
    side by side (as on a Zen 4: 0.70x its latency time there): the throughput choice follows the second timing."""
    scripts = {("onnx", "fp32"): (0.10, 1.00, 0.0), ("onnx", "int8"): (0.040, 0.400, 0.0),
               ("openvino", "int8+bf16"): (0.060, 0.440, 0.0), ("openvino", "fp32"): (0.09, 0.55, 0.0)}
    per_row = {("onnx", "fp32"): (0.45, 2), ("onnx", "int8"): (0.19, 2), ("openvino", "int8+bf16"): (0.15, 2)}
    decision = _measure(scripts, throughput=per_row)                 # openvino fp32: no throughput mode here
    assert decision.best().name == "onnx int8"
    assert decision.best(workload="throughput").name == "openvino int8+bf16"
    got = {r.name: r for r in decision.results}
    assert got["openvino int8+bf16"].row_s == pytest.approx(0.075)  # 2 rows of 0.15 s on 2 requests at once
    assert got["openvino fp32"].row_s is None and "no streams" in got["openvino fp32"].throughput_error
    assert got["onnx fp32"].row_s is None and got["onnx fp32"].throughput_error is None   # 2.5x the batch: not timed
    assert decision.cost(got["openvino fp32"], "throughput") == float("inf")   # never the throughput choice
    assert "per long row run as a throughput load" in decision.why(workload="throughput")
    assert "75.0 ms per 384-token row as a throughput load" in decision.why(workload="throughput")
    table = tune.format_decision(decision, None)
    assert "75.0 ms/row" in table and "as a throughput load: RuntimeError: no streams" in table
    again = tune.Decision.from_json(decision.to_json())
    assert again.best(workload="throughput").name == "openvino int8+bf16" and again.best().name == "onnx int8"
    without = _measure(scripts)                                      # not timed that way: the batch's time
    assert without.best(workload="throughput").name == "onnx int8"


def test_a_placement_far_behind_on_the_batch_is_not_timed_as_a_throughput_load():
    """More than THROUGHPUT_WITHIN (1.5x) the fastest batch: never opened as a throughput load, so never the
    throughput choice, and the table says why; a placement within it is timed so and can win."""
    scripts = {("onnx", "fp32"): (0.10, 1.00, 0.0),                 # 2.5x onnx int8's batch
               ("onnx", "int8"): (0.040, 0.400, 0.0),
               ("openvino", "int8+bf16"): (0.060, 0.590, 0.0),       # 1.475x: timed
               ("openvino", "bf16"): (0.050, 0.610, 0.0)}            # 1.525x: not timed
    per_row = {key: (0.05, 2) for key in scripts}                    # were they timed, any could be fastest
    per_row["openvino", "int8+bf16"] = (0.15, 2)
    decision = _measure(scripts, throughput=per_row)
    got = {r.name: r for r in decision.results}
    assert got["openvino int8+bf16"].row_s == pytest.approx(0.075) and got["onnx int8"].row_s is not None
    for name in ("onnx fp32", "openvino bf16"):
        assert got[name].row_s is None and got[name].throughput_error is None and got[name].relative is not None
    assert decision.best(workload="throughput").name == "onnx int8"   # 0.025 s a row; the skipped ones' 0.025 unseen
    table = tune.format_decision(decision, None)
    assert "throughput load 'not timed': its batch took more than 1.5x the fastest's" in table
    assert all("not timed" in line for line in table.splitlines() if line.startswith(("  onnx fp32", "  openvino bf16")))


def test_a_throughput_load_spreads_at_least_one_row_over_each_parallel_request():
    clock, opened = Clock(), []

    def opener(folder, placement):
        if placement.options == "throughput":
            opened.append(ThroughputFake(clock, 0.1, 4))
            return opened[-1]
        return FakeBackend(placement, clock, 0.01, 0.1)

    candidates = [_placement(ONNX32)]
    decision = tune.measure(Path("/m"), FakeSpec(), candidates, opener, key="k", tokenizer=FakeTokenizer(),
                            timer=clock, throughput=[replace(candidates[0], options="throughput")])
    assert opened and set(opened[0].rows) == {1}              # 2 batch rows, 4 requests: 4 rows of one each
    assert decision.results[0].row_s == pytest.approx(0.1 / 4)
    with pytest.raises(ValueError, match="one each"):
        tune.measure(Path("/m"), FakeSpec(), candidates, opener, key="k", tokenizer=FakeTokenizer(), timer=clock,
                     throughput=candidates * 2)


def test_a_placement_outside_the_bounds_is_never_timed():
    runs = []
    real = FakeBackend.run

    def counting(self, inputs):
        runs.append((self.placement.dtype, inputs["input_ids"].shape[0]))
        return real(self, inputs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FakeBackend, "run", counting)
        decision = _measure({("onnx", "fp32"): (0.02, 1.0, 0.0), ("openvino", "bf16"): (0.001, 0.01, 5.0)})
    bad = next(r for r in decision.results if r.name == "openvino bf16")
    assert not bad.passed and bad.relative is None and bad.rounds == 0 and bad.fidelity["mean"] < 0.9
    assert ("bf16", 1) not in runs                  # the probe set ran (8 + 3 rows), the timed query never did
    assert "not timed" in tune.format_decision(decision, None) and "outside the fidelity bounds" in decision.why()


def test_int8_fidelity_comes_from_the_manifest_gate_and_a_failed_gate_is_never_opened():
    passed = replace(ONNX8, gate=(("mean_cosine", 0.9993), ("min_cosine", 0.995), ("p1_cosine", 0.996)))
    failed = replace(OV8, gate=(("mean_cosine", 0.95), ("min_cosine", 0.5), ("p1_cosine", 0.6)))
    candidates = [_placement(ONNX32), _placement(passed), _placement(failed), _placement(failed, "int8+bf16")]
    clock, opened, runs = Clock(), [], []
    scripts = {("onnx", "fp32"): (0.02, 1.0, 0.0), ("onnx", "int8"): (0.01, 0.5, 5.0),   # noise the probes would see
               ("openvino", "int8+bf16"): (0.01, 0.4, 0.01)}

    class Counted(FakeBackend):
        def run(self, inputs):
            runs.append((self.placement.dtype, inputs["input_ids"].shape[0]))
            return super().run(inputs)

    def opener(folder, placement):
        opened.append(tune.label(placement))
        return Counted(placement, clock, *scripts[placement.backend, placement.dtype])

    decision = tune.measure(Path("/m"), FakeSpec(), candidates, opener, key="k", tokenizer=FakeTokenizer(), timer=clock)
    by_name = {r.name: r for r in decision.results}
    gated = by_name["onnx int8"]
    assert gated.checked_by == tune.GATE and gated.fidelity["mean"] == 0.9993 and gated.passed and gated.relative
    assert not any(dtype == "int8" and rows == 8 for dtype, rows in runs)    # its probe batch never ran
    assert "openvino int8" not in opened and by_name["openvino int8"].relative is None   # failed gate: not opened
    assert not by_name["openvino int8"].passed and by_name["openvino int8"].checked_by == tune.GATE
    mixed = by_name["openvino int8+bf16"]                                   # the gate ran the f32 hint, not bf16
    assert mixed.checked_by == "" and ("int8+bf16", 8) in runs and mixed.passed
    assert decision.best().name == "openvino int8+bf16"
    table = tune.format_decision(decision, None)
    assert f"mean 0.99930, p1 0.99600 ({tune.GATE})" in table
    assert tune.Decision.from_json(decision.to_json()) == decision


def test_the_next_fp32_file_is_the_reference_when_the_first_cannot_open():
    decision = _measure({("onnx", "fp32"): (0.02, 1.0, 0.0), ("openvino", "fp32"): (0.03, 1.2, 0.0),
                         ("openvino", "int8"): (0.01, 0.5, 5.0)}, fail=(("onnx", "fp32"),))
    assert decision.reference == "openvino fp32"
    assert not next(r for r in decision.results if r.name == "openvino int8").passed
    assert decision.best().name == "openvino fp32"


def test_a_placement_that_fails_while_timed_is_reported_and_the_others_still_measured():
    class Flaky(FakeBackend):
        calls = 0  # over every open: a lost device stays lost

        def run(self, inputs):
            Flaky.calls += 1
            if Flaky.calls > 15:  # probes, warm-up and its first round pass; opened again, its second round does not
                raise RuntimeError("device lost")
            return super().run(inputs)

    clock = Clock()
    scripts = {("onnx", "fp32"): (0.02, 1.00, 0.0), ("onnx", "int8"): (0.02, 1.01, 0.0)}

    def opener(folder, placement):
        q, d, noise = scripts[placement.backend, placement.dtype]
        return (Flaky if placement.dtype == "fp32" else FakeBackend)(placement, clock, q, d, noise)

    decision = tune.measure(Path("/m"), FakeSpec(), [_placement(ONNX32), _placement(ONNX8)], opener, key="k",
                            tokenizer=FakeTokenizer(), timer=clock)
    by_name = {r.name: r for r in decision.results}
    assert "device lost" in by_name["onnx fp32"].error and by_name["onnx int8"].error is None
    assert decision.best().name == "onnx int8" and decision.reference == "onnx fp32"


def test_without_an_fp32_file_nothing_is_checked_and_the_report_says_so():
    decision = _measure({("onnx", "int8"): (0.01, 0.5, 0.0), ("openvino", "int8"): (0.02, 0.4, 0.0)})
    assert decision.reference is None and all(r.fidelity is None for r in decision.results)
    assert "fidelity not checked" in decision.why()


def test_no_candidates_is_a_clear_error():
    with pytest.raises(ValueError, match="no CPU placement"):
        tune.measure(Path("."), FakeSpec(), [], lambda f, p: None, key="k", tokenizer=FakeTokenizer())


# ---- the stored decision ------------------------------------------------------------------------------

def test_decision_round_trips_through_the_cache_and_off_stores_nothing(tmp_path):
    decision = _measure({("onnx", "fp32"): (0.02, 1.0, 0.0), ("onnx", "int8"): (0.01, 0.5, 0.01)})
    path = tune.save_decision(tmp_path, decision)
    assert path == tmp_path / "tune" / "k.json" and json.loads(path.read_text())["key"] == "k"
    loaded = tune.load_decision(tmp_path, "k")
    assert loaded == decision and loaded.best() == decision.best()
    assert tune.load_decision(tmp_path, "other") is None
    assert tune.save_decision(None, decision) is None and tune.load_decision(None, "k") is None
    path.write_text("{not json")
    assert tune.load_decision(tmp_path, "k") is None  # a broken cache file is ignored, not an error
    path.write_text(decision.to_json().replace(f'"version": {tune.DECISION_VERSION}', '"version": 0'))
    assert tune.load_decision(tmp_path, "k") is None


def test_decision_key_follows_cpu_libraries_and_model_files(tmp_path):
    host = {"cpu": "AMD EPYC", "machine": "x86_64", "flags": ["avx2", "avx512_bf16", "avx512_vnni"]}
    libs = {"onnxruntime": "1.32.0", "openvino": "2026.4.1"}
    key = tune.decision_key(["onnx:a"], host, libs)
    assert tune.decision_key(["onnx:a"], dict(host), dict(libs)) == key
    assert tune.decision_key(["onnx:a"], {**host, "flags": ["avx2"]}, libs) != key          # another CPU
    assert tune.decision_key(["onnx:a"], {**host, "cpu": "Intel Xeon"}, libs) != key
    assert tune.decision_key(["onnx:a"], host, {**libs, "openvino": "2027.0.0"}) != key    # a library update
    assert tune.decision_key(["onnx:b"], host, libs) != key                                # other model files
    (tmp_path / "onnx").mkdir()
    model = tmp_path / "onnx" / "model.onnx"
    model.write_bytes(b"x" * 10)
    first = tune.key_for(tmp_path, [ONNX32])
    assert tune.key_for(tmp_path, [ONNX32]) == first
    model.write_bytes(b"y" * 11)  # a replaced file (no manifest: size and mtime)
    assert tune.key_for(tmp_path, [ONNX32]) != first
    assert tune.key_for(tmp_path, [replace(ONNX32, sha256="a" * 64)]) != tune.key_for(
        tmp_path, [replace(ONNX32, sha256="b" * 64)])                                     # manifest sha256s


# ---- devices: the hook ---------------------------------------------------------------------------------

CPU_BF16 = devices.Inventory({"onnx": EngineInventory("1.32.0", ("CPUExecutionProvider",), distributions=("onnxruntime",)),
                              "openvino": EngineInventory("2026.4.1", ("CPU",), {"CPU": "EPYC"},
                                                          {"CPU": ("FP32", "INT8", "BF16")})},
                             cpu_int8_dot=("avx512_vnni",))


def test_tuned_choice_goes_first_among_cpu_placements_with_the_builtin_order_after_it():
    tuned = {"backend": "onnx", "dtype": "int8", "file": ONNX8.path, "why": "measured on this machine x"}
    plan = devices.select_placements([ONNX32, ONNX8, OV32, OV8], inventory=CPU_BF16, cache_dir=Path("/c"),
                                     tuned=tuned)
    assert (plan[0].backend, plan[0].dtype, plan[0].why) == ("onnx", "int8", tuned["why"])
    assert len(plan) == len({(p.backend, p.dtype) for p in plan}) and plan[1].backend == "openvino"
    assert plan[0].options.side_by_side
    one_by_one = devices.select_placements([ONNX32, ONNX8, OV32, OV8], inventory=CPU_BF16, cache_dir=Path("/c"),
                                           tuned={**tuned, "side_by_side": "off"})   # measured slower side by side
    assert not one_by_one[0].options.side_by_side and one_by_one[1:] == plan[1:]      # the same placement once
    # an explicit dtype, a backend the choice is not on, or a file no longer there: the built-in rules
    assert devices.select_placements([ONNX32, ONNX8, OV32, OV8], dtype="int8", inventory=CPU_BF16,
                                     cache_dir=Path("/c"), tuned=tuned)[0].backend == "openvino"
    assert devices.select_placements([ONNX32, ONNX8, OV32, OV8], backend="openvino", inventory=CPU_BF16,
                                     cache_dir=Path("/c"), tuned=tuned)[0].backend == "openvino"
    without_file = devices.select_placements([ONNX32, OV32, OV8], inventory=CPU_BF16, cache_dir=Path("/c"),
                                             tuned=tuned)
    assert without_file == devices.select_placements([ONNX32, OV32, OV8], inventory=CPU_BF16, cache_dir=Path("/c"))
    assert not any(p.why.startswith("measured") for p in without_file)


def test_cpu_candidates_are_every_backend_and_precision_this_cpu_runs(monkeypatch):
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_vnni", "avx512_bf16"}))   # no AMX
    got = {(p.backend, p.dtype, p.artifact.path) for p in devices.cpu_candidates([ONNX32, ONNX8, OV32, OV8],
                                                                                inventory=CPU_BF16)}
    assert got == {("onnx", "fp32", ONNX32.path), ("onnx", "int8", ONNX8.path), ("openvino", "fp32", OV32.path),
                   ("openvino", "bf16", OV32.path), ("openvino", "int8", OV8.path),
                   ("openvino", "int8+bf16", OV8.path)}
    no_bf16 = replace(CPU_BF16, engines={**CPU_BF16.engines, "openvino": replace(
        CPU_BF16.engine("openvino"), capabilities={"CPU": ("FP32", "INT8")})})
    assert {p.dtype for p in devices.cpu_candidates([OV32, OV8], inventory=no_bf16)} == {"fp32", "int8"}
    mixed = next(p for p in devices.cpu_candidates([OV8], inventory=CPU_BF16) if p.dtype == "int8+bf16")
    assert mixed.options.config["INFERENCE_PRECISION_HINT"] == "bf16"
    monkeypatch.setattr(host, "cpu_flags", lambda *_: frozenset({"avx512_vnni", "avx512_bf16", "amx_bf16"}))
    assert "int8+bf16" not in {p.dtype for p in devices.cpu_candidates([OV8], inventory=CPU_BF16)}  # wrong on AMX


# ---- loads that follow a stored decision (real tiny models, fake clock) --------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache dir of this test's own: stored decisions must not leak into other tests' loads."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GRANITE_RT_CACHE", str(folder))
    return folder


@pytest.fixture
def hub_copy(tiny_embedder_folders, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_embedder_folders["hub"], tmp_path / "hub"))


def _scripted_opener(clock: Clock, seconds: dict[tuple[str, str], float],
                     batch_seconds: dict[tuple[str, str], float] | None = None):
    """Real backends whose runs advance the fake clock by the seconds scripted for (backend, dtype); for a
    batch of several rows by ``batch_seconds`` where it has the placement."""
    class Timed:
        def __init__(self, backend, cost, batch_cost):
            self.backend, self.cost, self.batch_cost, self.input_names = backend, cost, batch_cost, backend.input_names

        def run(self, inputs):
            clock.now += self.batch_cost if len(inputs["input_ids"]) > 1 else self.cost
            return self.backend.run(inputs)

    def opener(folder, p):
        cost = seconds.get((p.backend, p.dtype), 1.0)
        return Timed(devices.open_verified(folder, p, threads=1), cost, (batch_seconds or {}).get((p.backend, p.dtype), cost))

    return opener


def test_auto_load_follows_the_stored_decision_and_says_it_was_measured(hub_copy, cache):
    clock = Clock()
    spec = load_spec(hub_copy)
    decision, saved = tune.tune_folder(hub_copy, spec, cache, timer=clock,
                                       opener=_scripted_opener(clock, {("onnx", "fp32"): 0.01}))
    assert saved is not None and saved.is_file() and decision.best().name == "onnx fp32"
    builtin = Embedder(hub_copy, dtype="fp32")                 # explicit dtype: not tuned
    assert not builtin.info["why"].startswith("measured")
    emb = Embedder(hub_copy)                                   # dtype="auto": the measured choice
    assert (emb.info["backend"], emb.info["dtype"]) == ("onnx", "fp32")
    assert emb.info["why"].startswith("measured on this machine")
    ov = Embedder(hub_copy, backend="openvino")                # the best OpenVINO placement measured
    assert ov.info["backend"] == "openvino" and ov.info["why"].startswith("measured on this machine")
    assert ((emb.encode(["a boundary layer"]) * builtin.encode(["a boundary layer"])).sum() > 0.999)


def test_a_throughput_load_follows_the_placement_fastest_on_batches(hub_copy, cache):
    clock = Clock()
    query = {("onnx", "fp32"): 0.002, ("openvino", "fp32"): 0.006}    # onnx fp32 answers a query 3x faster,
    batch = {("onnx", "fp32"): 0.050, ("openvino", "fp32"): 0.030}    # openvino fp32 a batch 1.7x faster
    decision, _ = tune.tune_folder(hub_copy, load_spec(hub_copy), cache, timer=clock,
                                   opener=_scripted_opener(clock, query, batch))
    assert decision.best().name == "onnx fp32"                       # geometric mean: 0.010 vs 0.013
    assert decision.best(workload="throughput").name == "openvino fp32"
    table = tune.format_decision(decision, None)
    assert "<- chosen (workload='latency')" in table and "<- chosen for workload='throughput'" in table
    served = Embedder(hub_copy)
    corpus = Embedder(hub_copy, workload="throughput")                 # as embed-corpus loads
    assert (served.info["backend"], served.info["dtype"]) == ("onnx", "fp32")
    assert (corpus.info["backend"], corpus.info["dtype"]) == ("openvino", "fp32")
    assert "by the time per long row run as a throughput load (workload='throughput')" in corpus.info["why"]
    assert "by the geometric mean of both shapes' times" in served.info["why"]


@pytest.mark.parametrize("beside_s,workers", [(0.4, 2), (0.6, 0)])
def test_a_load_follows_the_measured_side_by_side_choice(hub_copy, cache, beside_s, workers):
    """Real two-thread onnxruntime placements whose side-by-side batches the fake clock scripts at 0.4 or 0.6 s a
    batch against 0.5 s in turn: the load that follows the decision runs a call's batches side by side (two
    workers) or one after another (none), with the same vectors."""
    clock = Clock()

    class Timed:
        def __init__(self, backend):
            self.backend, self.input_names = backend, backend.input_names
            side = backend.side_by_side
            self.side_by_side = side and SideBySide(self._beside, side.workers)

        def run(self, inputs):
            clock.now += 0.5 if len(inputs["input_ids"]) > 1 else (0.01 if self.backend.placement.dtype == "fp32"
                                                                    else 0.02)
            return self.backend.run(inputs)

        def _beside(self, inputs):
            with SideBySideFake.lock:
                clock.now += beside_s
            return self.backend.side_by_side.run(inputs)

    def opener(folder, placement):
        return Timed(devices.open_verified(folder, placement, threads=2))

    decision, _ = tune.tune_folder(hub_copy, load_spec(hub_copy), cache, timer=clock, opener=opener)
    onnx = decision.best("onnx")
    assert onnx.name == "onnx fp32" and onnx.side_by_side == pytest.approx(beside_s / 0.5)
    texts = [f"text {i} " + "word " * (i % 13) for i in range(40)]
    model = Embedder(hub_copy, backend="onnx", threads=2)
    assert model.info["why"].startswith("measured on this machine") and model.info["side_by_side"] == workers
    assert ("(so one after another)" in model.info["why"]) is (workers == 0)
    plain = Embedder(hub_copy, backend="onnx", dtype="fp32", threads=2)        # no decision: the built-in way
    assert plain.info["side_by_side"] == 2
    np.testing.assert_array_equal(model.encode(texts, batch_size=8), plain.encode(texts, batch_size=8))


def test_a_changed_model_file_invalidates_the_decision(hub_copy, cache):
    clock = Clock()
    tune.tune_folder(hub_copy, load_spec(hub_copy), cache, timer=clock,
                     opener=_scripted_opener(clock, {("onnx", "fp32"): 0.01}))
    assert Embedder(hub_copy).info["why"].startswith("measured")
    model = hub_copy / "onnx" / "model.onnx"
    model.write_bytes(model.read_bytes())  # same bytes, new mtime: no manifest, so the file counts as replaced
    assert not Embedder(hub_copy).info["why"].startswith("measured")


def test_a_plain_load_never_measures_and_tune_true_measures_once(hub_copy, cache, monkeypatch):
    calls = []
    real = tune.measure
    monkeypatch.setattr(tune, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert not Embedder(hub_copy).info["why"].startswith("measured") and calls == []   # cold start: no tuning
    first = Embedder(hub_copy, tune=True)
    assert calls == [1] and first.info["why"].startswith("measured on this machine")
    assert Embedder(hub_copy, tune=True).info["why"] == first.info["why"] and calls == [1]  # stored: not again
    with pytest.raises(ValueError, match="tune=True"):
        Embedder(hub_copy, dtype="fp32", tune=True)


def test_cache_off_keeps_decisions_off_disk(hub_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("GRANITE_RT_CACHE", "off")
    emb = Embedder(hub_copy, tune=True)  # measured for this load only
    assert emb.info["why"].startswith("measured on this machine")
    assert not Embedder(hub_copy).info["why"].startswith("measured")


def test_reranker_tuning_checks_scores_per_query(tiny_reranker_folders, tmp_path, cache):
    folder = Path(shutil.copytree(tiny_reranker_folders["hub"], tmp_path / "rr"))
    clock = Clock()
    decision, _ = tune.tune_folder(folder, load_spec(folder), cache, timer=clock,
                                   opener=_scripted_opener(clock, {("openvino", "fp32"): 0.01}))
    fp32_ov = next(r for r in decision.results if r.name == "openvino fp32")
    assert decision.kind == "reranker" and fp32_ov.fidelity["mean"] > 0.9999 and fp32_ov.passed
    assert Reranker(folder).info["backend"] == "openvino"
    assert Reranker(folder).info["why"].startswith("measured on this machine")


def test_a_reranker_is_ranked_by_its_candidate_batch(tiny_reranker_folders, tmp_path, cache):
    """A reranker's call is a query's candidates: the placement fastest on that batch wins though it is slower on one
    short pair (as OpenVINO INT8 + bf16 was against onnxruntime INT8 on the Xeon); an embedder with the same times
    would take the other (geometric mean, test_a_throughput_load_follows_the_placement_fastest_on_batches)."""
    folder = Path(shutil.copytree(tiny_reranker_folders["hub"], tmp_path / "rr"))
    clock = Clock()
    query = {("onnx", "fp32"): 0.010, ("openvino", "fp32"): 0.030}
    batch = {("onnx", "fp32"): 0.100, ("openvino", "fp32"): 0.080}
    decision, _ = tune.tune_folder(folder, load_spec(folder), cache, timer=clock,
                                   opener=_scripted_opener(clock, query, batch))
    assert decision.best().name == "openvino fp32"
    assert decision.shapes["docs"] == tune.DOC_BATCH["reranker"][0] == 4
    served = Reranker(folder)
    assert served.info["backend"] == "openvino" and "the candidate batch's time" in served.info["why"]


def test_cli_tune_prints_the_table_and_stores_the_decision(hub_copy, cache, capsys):
    assert cli_main(["tune", str(hub_copy), "--budget", "0"]) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and "onnx fp32" in out and "decision stored in" in out
    assert len(list((cache / "tune").glob("*.json"))) == 1
    assert Embedder(hub_copy).info["why"].startswith("measured on this machine")


def test_an_exported_folder_reuses_its_int8_gate_and_probes_the_rest(tiny_embedder_folders, tmp_path, cache):
    """The manifest's gate figures reach Artifact.gate and the tuner: an "INT8" entry (the fp32 graph under the
    INT8 name, so it runs) with gate figures is taken at its gate's word; every other placement is probed."""
    folder = Path(shutil.copytree(tiny_embedder_folders["export"], tmp_path / "exported"))
    manifest = json.loads((folder / "granite_rt.json").read_text())
    fp32 = next(a for a in manifest["artifacts"] if a["path"] == "onnx/model.onnx")
    files = {}
    for rel, digest in fp32["files"].items():
        renamed = rel.replace("model.onnx", "model_qint8.onnx")
        shutil.copy(folder / rel, folder / renamed)
        files[renamed] = digest
    figures = {"mean_cosine": 0.999123, "p1_cosine": 0.998765, "min_cosine": 0.99801, "top10_overlap": 0.97}
    manifest["artifacts"].append({**fp32, "path": "onnx/model_qint8.onnx", "precision": "int8", "files": files,
                                  "gate": {"figures": figures, "missed": []}})
    (folder / "granite_rt.json").write_text(json.dumps(manifest))
    spec = load_spec(folder)
    assert dict(next(a for a in spec.artifacts if a.precision == "int8").gate) == figures
    clock = Clock()
    decision, _ = tune.tune_folder(folder, spec, cache, timer=clock, opener=_scripted_opener(clock, {}))
    by_name = {r.name: r for r in decision.results}
    assert by_name["onnx int8"].checked_by == tune.GATE and by_name["onnx int8"].fidelity["mean"] == 0.999123
    assert by_name["onnx int8"].relative is not None                      # timed like any other
    assert all(r.checked_by == "" for name, r in by_name.items() if name != "onnx int8")
