"""The benchmark harness's logic on fake contenders: interleaving, statistics, ratios, targets, texts.

No timing assertions: the fakes return fixed "seconds", so every figure checked here is computed
from known inputs.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench.harness import interleave, round_order, warm_up
from bench.report import DEFAULT, check_targets, markdown
from bench.stats import paired_ratio, round_medians, summarize, time_ratios


class FakeRunner:
    """Returns the next of its scripted times and records every call in a shared log."""

    def __init__(self, name: str, times: list[float], log: list[str], fail: bool = False):
        self.name, self._times, self._log, self._fail = name, list(times), log, fail

    def call(self, payload: dict) -> float:
        self._log.append(self.name)
        if self._fail:
            raise RuntimeError("model file missing")
        return self._times.pop(0)


def test_round_order_rotates_so_every_contender_leads_once():
    names = ["A", "B", "C"]
    orders = [round_order(names, i) for i in range(3)]
    assert orders == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert {o[0] for o in orders} == set(names)


def test_interleave_alternates_contenders_and_keeps_each_ones_times():
    log: list[str] = []
    a = FakeRunner("A", [1.0, 2.0, 3.0, 4.0], log)
    b = FakeRunner("B", [10.0, 20.0, 30.0, 40.0], log)
    times = interleave([a, b], {"texts": ["x"]}, rounds=2, calls_per_round=2)
    assert log == ["A", "A", "B", "B", "B", "B", "A", "A"]
    assert times == {"A": [1.0, 2.0, 3.0, 4.0], "B": [10.0, 20.0, 30.0, 40.0]}


def test_interleave_pauses_before_each_contenders_turn_not_between_its_calls():
    log: list[str] = []
    a = FakeRunner("A", [1.0, 2.0, 3.0, 4.0], log)
    b = FakeRunner("B", [10.0, 20.0, 30.0, 40.0], log)
    interleave([a, b], {}, rounds=2, calls_per_round=2, pause=lambda: log.append("pause"))
    assert log == ["pause", "A", "A", "pause", "B", "B", "pause", "B", "B", "pause", "A", "A"]


def test_interleave_drops_a_contender_that_fails_mid_run_and_keeps_the_others():
    log: list[str] = []

    class DiesInRoundTwo(FakeRunner):
        def call(self, payload: dict) -> float:
            if len(self._log) >= 2:
                raise RuntimeError("worker exited (code -9)")
            return super().call(payload)

    a = FakeRunner("A", [1.0, 2.0, 3.0], log)
    b = DiesInRoundTwo("B", [10.0, 20.0, 30.0], log)
    failed: dict[str, str] = {}
    times = interleave([a, b], {}, rounds=3, failed=failed)
    assert times == {"A": [1.0, 2.0, 3.0]}
    assert failed == {"B": "RuntimeError in round 2: worker exited (code -9)"}


def test_run_kind_loads_one_group_of_contenders_at_a_time_and_merges_their_results(monkeypatch, tmp_path):
    """granite-rt's files, then the IBM-style ones: never both groups' processes alive together."""
    from bench import run
    from bench.workloads import Sizes, Workload

    alive: list[str] = []
    peak = []

    class FakeWorker:
        def __init__(self, contender, kind, model, python, log_dir):
            self.name, self.load_s, self.precision = contender.name, 0.1, None
            alive.append(self.name)
            peak.append(len(alive))

        def call(self, payload):
            return 1.0

        def close(self):
            alive.remove(self.name)

    monkeypatch.setattr(run, "Worker", FakeWorker)
    monkeypatch.setattr(run, "settle", lambda: None)
    monkeypatch.setattr(run, "_missing", lambda *args: None)
    names = {"granite-rt defaults (auto)", "fastembed INT8", "fastembed fp32 (IBM files)", "ST onnx (IBM files)"}
    workload = Workload(key="a", title="(a)", kind="embedder", payload={}, items=1, unit="docs/s")
    pythons = {env: "python" for env in ("project", "bench", "st-onnx", "llamacpp", "infinity")}
    results = run.run_kind("embedder", [workload], model=None, sizes=Sizes(rounds=2), pythons=pythons,
                           log_dir=tmp_path, only=names)
    assert set(results["a"]["seconds"]) == names and set(results["a"]["load_s"]) == names
    assert max(peak) == 2 and not alive   # two per group, all closed


def test_warm_up_calls_each_once_and_drops_failures_with_their_error():
    log: list[str] = []
    good = FakeRunner("good", [0.5], log)
    bad = FakeRunner("bad", [], log, fail=True)
    ok, failed = warm_up([good, bad], {})
    assert [r.name for r in ok] == ["good"] and log == ["good", "bad"]
    assert failed == {"bad": "RuntimeError: model file missing"}


def test_summary_is_median_min_max():
    s = summarize([3.0, 1.0, 10.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    with pytest.raises(ValueError, match="no measurements"):
        summarize([])


def test_time_ratios_compare_every_pair_both_ways():
    r = time_ratios({"fast": 1.0, "slow": 4.0, "mid": 2.0})
    assert r["fast"]["slow"] == 0.25 and r["slow"]["fast"] == 4.0 and r["mid"]["fast"] == 2.0
    assert "fast" not in r["fast"]


def _results(default_s: float, peer_s: float) -> dict:
    seconds = {DEFAULT: {"median": default_s, "min": default_s, "max": default_s, "n": 3},
               "ST openvino": {"median": peer_s, "min": peer_s, "max": peer_s, "n": 3}}
    wl = {"title": "t", "unit": "docs/s", "items": 32, "tokens": {}, "failed": {}, "skipped": ["ST torch"],
          "seconds": seconds}
    return {"workloads": {"a_docs512": wl, "c_query": {**wl, "unit": "ms"}}, "quick": False,
            "sizes": {"rounds": 3},
            "machine": {"date": "d", "cpu": "c", "physical_cores": 2, "logical_cpus": 2, "mhz": 1.0,
                        "memory_gib": 1, "flags": {"avx512_bf16": True}}}


def test_paired_ratio_divides_within_each_round_then_takes_the_median():
    assert round_medians([1.0, 3.0, 2.0, 10.0, 20.0, 30.0], calls_per_round=3) == [2.0, 20.0]
    with pytest.raises(ValueError, match="rounds of 4"):
        round_medians([1.0, 2.0, 3.0], calls_per_round=4)
    # the machine slowed down 4x in the second round: each round's ratio is 0.5, the ratio of medians is not
    assert paired_ratio([1.0, 4.0, 2.0], [2.0, 8.0, 4.0]) == 0.5
    assert paired_ratio([1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0], calls_per_round=2) == 0.5
    assert paired_ratio([1.0, 2.0], [1.0]) is None  # not the same rounds: nothing to pair


def _with_rounds(results: dict, key: str, raw: dict[str, list[float]]) -> dict:
    wl = results["workloads"][key] = dict(results["workloads"][key])
    wl["raw_seconds"] = raw
    wl["seconds"] = {name: {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "n": len(ts)}
                     for name, ts in raw.items()}
    return results


def test_targets_report_the_same_round_ratio_beside_the_ratio_of_medians():
    results = _with_rounds(_results(default_s=1.0, peer_s=2.0), "a_docs512",
                           {DEFAULT: [1.0, 4.0, 2.0], "ST openvino": [2.0, 3.0, 8.0],
                            "ST openvino INT8 IR (IBM files)": [1.5, 1.5, 1.5]})
    rows = {(t["issue"], t["workload"], t["peer"]): t for t in check_targets(results)}
    row = rows[(8, "a_docs512", "ST openvino")]
    assert row["achieved"] == pytest.approx(3.0 / 2.0)          # median 3.0 / median 2.0
    assert row["paired"] == pytest.approx(1 / 0.5)              # rounds 0.5, 1.33, 0.25: median 0.5, as a speedup 2
    assert row["met"]                                            # 'met' stays the ratio of medians
    # the fastest peer ran in the other group (IBM-style files, minutes apart): no rounds to pair with
    best = rows[(21, "a_docs512", "ST openvino INT8 IR (IBM files)")]
    assert best["achieved"] == pytest.approx(1.5 / 2.0) and best["paired"] is None
    results["targets"] = check_targets(results)
    assert "| 8 | a_docs512 | ST openvino | speed × ≥ 1.3 | 1.50 | 2.00 | yes |" in markdown(results)


def test_targets_use_speedup_for_throughput_and_time_ratio_for_latency():
    results = _results(default_s=1.0, peer_s=2.0)
    rows = {(t["workload"], t["peer"]): t for t in check_targets(results) if t["issue"] == 8}
    assert rows[("a_docs512", "ST openvino")]["achieved"] == 2.0 and rows[("a_docs512", "ST openvino")]["met"]
    assert rows[("c_query", "ST openvino")]["achieved"] == 0.5 and rows[("c_query", "ST openvino")]["met"]
    assert rows[("a_docs512", "ST torch")]["achieved"] is None  # not in this run: never invented
    slower = {(t["workload"], t["peer"]): t for t in check_targets(_results(default_s=2.0, peer_s=1.5))
              if t["issue"] == 8}
    assert slower[("a_docs512", "ST openvino")]["met"] is False
    assert slower[("c_query", "ST openvino")]["met"] is False


def test_issue_21_targets_compare_with_the_fastest_peer_of_the_run():
    results = _results(default_s=1.0, peer_s=2.0)
    seconds = results["workloads"]["a_docs512"]["seconds"] = dict(results["workloads"]["a_docs512"]["seconds"])
    seconds["fastembed INT8"] = {"median": 0.9, "min": 0.9, "max": 0.9, "n": 3}       # the fastest peer
    seconds["granite-rt ORT int8"] = {"median": 0.5, "min": 0.5, "max": 0.5, "n": 3}  # granite-rt: not a peer
    rows = {t["workload"]: t for t in check_targets(results) if t["issue"] == 21}
    assert rows["a_docs512"]["peer"] == "fastembed INT8"
    assert rows["a_docs512"]["achieved"] == pytest.approx(0.9) and rows["a_docs512"]["met"] is False
    assert rows["c_query"]["peer"] == "ST openvino" and rows["c_query"]["met"]   # 1.0 / 2.0 <= 0.8
    assert rows["b_cranfield"]["achieved"] is None                                 # not run: never invented


def test_markdown_shows_rates_ratios_and_unmet_targets():
    results = _results(default_s=2.0, peer_s=1.0)
    results["targets"] = check_targets(results)
    text = markdown(results)
    assert "16.00 docs/s" in text and "32.00 docs/s" in text  # 32 docs / median seconds
    assert f"| **{DEFAULT}** | 16.00 docs/s | 2–2 s | 0.50 |" in text
    assert "| ST torch | not run" in text
    assert "| 8 | a_docs512 | ST openvino | speed × ≥ 1.3 | 0.50 | — | **no** |" in text  # no per-call times kept
    assert "| 21 | a_docs512 | ST openvino | speed × ≥ 1.2 | 0.50 | — | **no** |" in text


def test_cutter_makes_texts_of_exact_token_counts(tiny_embedder_checkpoint):
    from tokenizers import Tokenizer

    from bench.data import Cutter

    tok_path = tiny_embedder_checkpoint / "tokenizer.json"
    texts = Cutter(tok_path).pieces(3, 64, seed=1)
    tok = Tokenizer.from_file(str(tok_path))
    tok.no_truncation()
    assert [len(tok.encode(t).ids) for t in texts] == [64, 64, 64]
    assert len(set(texts)) == 3


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_cold_start_processes_may_write_bytecode(monkeypatch):
    """An installed granite-rt has its bytecode (pip writes it), so its cold start must not be timed compiling a
    checkout's modules because the runner's environment forbids writing bytecode."""
    from bench import run

    monkeypatch.setitem(run.WORKER_ENV, "PYTHONDONTWRITEBYTECODE", "1")   # as the runner's environment had it
    env = run.cold_start_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["HF_HUB_OFFLINE"] == "1"


def test_cold_start_peak_rss_is_the_childs_own_not_the_runners():
    """ru_maxrss of a child includes its parent's peak (folded in at exec); the cold start reports VmHWM."""
    import os
    import subprocess
    import sys

    ballast = np.ones(300 * 2**20 // 8)  # this process: ≥ 300 MiB resident
    code = "import json; from bench.machine import peak_rss_mib; print(json.dumps(peak_rss_mib()))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, text=True)
    own = json.loads(proc.stdout.read())
    _, _, usage = os.wait4(proc.pid, 0)
    assert usage.ru_maxrss / 1024 > 300 > 100 > own > 1, (usage.ru_maxrss / 1024, own)
    assert ballast.sum() > 0


def test_peak_rates_follow_the_widest_vector_unit():
    from bench.machine import peak_gops

    def info(*flags):
        return {"physical_cores": 2, "mhz": 2500.0, "flags": {f: True for f in flags}}

    assert peak_gops(info("avx2")) == {"fp32": 160.0, "int8": 320.0}                   # 2 × 2.5 GHz × 32 / 64
    assert peak_gops(info("avx2", "avx_vnni")) == {"fp32": 160.0, "int8": 640.0}       # VEX vpdpbusd: 128
    assert peak_gops(info("avx2", "avx512f", "avx512_vnni")) == {"fp32": 320.0, "int8": 1280.0}
    assert peak_gops(info()) == {}                                                       # unknown unit: no claim
    zen4 = {**info("avx2", "avx512f", "avx512_vnni", "avx512_bf16"), "vendor": "AuthenticAMD"}
    assert peak_gops(zen4) == {"fp32": 160.0, "bf16": 320.0, "int8": 640.0}   # 512-bit ops on 256-bit units
    zen5 = {**info("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"), "vendor": "AuthenticAMD"}
    assert peak_gops(zen5) == {"fp32": 320.0, "bf16": 640.0, "int8": 1280.0}  # full-width 512-bit units
    assert peak_gops({**zen4, "vendor": "GenuineIntel"})["int8"] == 1280.0


def test_measured_peaks_replace_the_nominal_ones_and_name_the_instruction_per_precision(monkeypatch):
    from bench import machine

    nominal = {"physical_cores": 2, "mhz": 2500.0, "flags": {"avx2": True, "avx512f": True, "avx512_vnni": True}}
    assert machine.peak_gops(nominal) == {"fp32": 320.0, "int8": 1280.0}
    measured = {**nominal, "measured_peaks_gops": {"fp32": 233.0, "int8": 929.0}}
    assert machine.peak_gops(measured) == {"fp32": 233.0, "int8": 929.0}
    assert machine.probe_kinds({"avx2": True}) == {"fp32": "fp32-ymm", "int8": "int8-avx2"}
    assert machine.probe_kinds({"avx2": True, "avx_vnni": True}) == {"fp32": "fp32-ymm", "int8": "int8-vex"}
    assert machine.probe_kinds({"avx2": True, "avx512f": True, "avx512_vnni": True, "avx512_bf16": True}) == {
        "fp32": "fp32-zmm", "bf16": "bf16-zmm", "int8": "int8-zmm"}
    assert machine.probe_kinds({}) == {}                     # no x86 vector unit: nothing measured
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    assert machine.measured_peaks({"avx2": True}, 2) == {}  # no compiler: the nominal peak stays


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")) or platform.machine() != "x86_64",
                    reason="needs a C compiler on x86-64")
def test_the_probe_counts_what_a_core_executes_per_cycle():
    """fp32 FMAs per cycle and core are 32 on AVX2 and on Zen 4's halved AVX-512, 64 on full-width AVX-512; a probe
    that miscounted its ops (or ran something else) lands outside both."""
    from bench import machine
    from granite_rt import host

    flags = {f: f in host.cpu_flags() for f in machine.FLAGS}
    cores = host.physical_cores()
    got = machine.measured_peaks(flags, cores)
    assert 200 < got["measured_mhz"] < 10_000, got
    per_cycle = got["measured_peaks_gops"]["fp32"] * 1e9 / (got["measured_mhz"] * 1e6 * cores)
    assert min(abs(per_cycle / 32 - 1), abs(per_cycle / 64 - 1)) < 0.25, got
    fp32 = got["measured_peaks_gops"].pop("fp32")
    assert all(1.5 < rate / fp32 < 5 for rate in got["measured_peaks_gops"].values()), got  # bf16, int8: 2-4x fp32


GRANITE_97M_SHAPE = {"num_hidden_layers": 12, "hidden_size": 384, "intermediate_size": 1536, "local_attention": 128,
                     "global_attn_every_n_layers": 3}


def test_op_count_of_the_full_and_the_first_position_graph():
    from bench.machine import encoder_gop_per_doc

    h, i, seq = 384, 1536, 512
    dense = 4 * h * h + 3 * h * i                      # per position and layer: QKV + output + gated MLP
    full = 12 * seq * dense + seq * 2 * h * (4 * seq + 8 * 128)   # 4 global layers over 512 keys, 8 over the window
    assert encoder_gop_per_doc(GRANITE_97M_SHAPE, seq) == pytest.approx(2 * full / 1e9)
    # First position only: layers 0-9 unchanged, layer 10 on 129 positions, layer 11's QKV on 65 and the rest on 1.
    first_ten = 10 * seq * dense + seq * 2 * h * (4 * seq + 6 * 128)
    layer10 = 129 * (dense + 2 * h * 128)
    layer11 = 65 * 3 * h * h + (h * h + 3 * h * i + 2 * h * 65)
    pruned = encoder_gop_per_doc(GRANITE_97M_SHAPE, seq, first_position=True)
    assert pruned == pytest.approx(2 * (first_ten + layer10 + layer11) / 1e9)
    assert 0.85 < pruned / (2 * full / 1e9) < 0.88


def test_efficiency_counts_the_graph_each_contender_runs():
    from bench.machine import encoder_gop_per_doc
    from bench.report import efficiency

    intel = {"flags": {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True}, "mhz": 2000.0, "physical_cores": 2}
    names = ("ST torch", "ST openvino INT8 IR", "granite-rt defaults (auto)", "ST onnx (IBM files)")
    workload = {"kind": "embedder", "tokens": {"per_doc": 512}, "lengths": [512] * 8, "items": 8, "precision": {},
                "seconds": {n: {"median": 1.0} for n in names}}
    results = {"workloads": {"a_docs512": workload}}
    eff = efficiency(results, {"embedder": GRANITE_97M_SHAPE}, intel, first_position={"embedder": True})
    full, pruned = encoder_gop_per_doc(GRANITE_97M_SHAPE, 512), encoder_gop_per_doc(GRANITE_97M_SHAPE, 512, True)
    counted = {n: e["gop_per_call"] for n, e in eff["workloads"]["a_docs512"]["contenders"].items()}
    assert counted == {"ST torch": 8 * full, "ST openvino INT8 IR": 8 * pruned, "granite-rt defaults (auto)": 8 * pruned,
                       "ST onnx (IBM files)": 8 * full}
    assert eff["workloads"]["a_docs512"]["contenders"]["granite-rt defaults (auto)"]["gops"] == pytest.approx(8 * pruned)
    plain = efficiency(results, {"embedder": GRANITE_97M_SHAPE}, intel)   # a full-graph export
    assert {e["gop_per_call"] for e in plain["workloads"]["a_docs512"]["contenders"].values()} == {8 * full}


GRANITE_RERANKER_SHAPE = {"num_hidden_layers": 22, "hidden_size": 768, "intermediate_size": 1152,
                          "local_attention": 128, "global_attn_every_n_layers": 3}


def test_efficiency_counts_every_workload_by_its_own_lengths_and_model():
    from bench.machine import encoder_gop_per_doc
    from bench.report import efficiency, markdown

    zen4 = {"flags": {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "avx_vnni": False},
            "mhz": 2500.0, "physical_cores": 2, "vendor": "AuthenticAMD"}
    auto = "granite-rt defaults (auto)"
    mixed = [55, 130, 604, 197]
    workloads = {
        "b_cranfield": {"kind": "embedder", "items": 4, "lengths": mixed, "tokens": {"total": sum(mixed)},
                        "precision": {auto: "int8"}, "seconds": {auto: {"median": 0.5}, "ST torch": {"median": 2.0}}},
        "d_rerank256": {"kind": "reranker", "items": 20, "lengths": [274] * 20, "tokens": {"pair": 274},
                        "precision": {auto: "int8+bf16"}, "seconds": {auto: {"median": 2.5}}},
        "c_query": {"kind": "embedder", "items": 1, "tokens": {"per_doc": 32}, "lengths": [32],
                    "precision": {auto: "int8"}, "seconds": {auto: {"median": 0.007}}},
    }
    old_b = {**workloads["b_cranfield"], "lengths": None}   # written before lengths were recorded: not counted
    eff = efficiency({"workloads": {**workloads, "b_old": old_b}},
                     {"embedder": GRANITE_97M_SHAPE, "reranker": GRANITE_RERANKER_SHAPE}, zen4,
                     first_position={"embedder": True, "reranker": False})
    assert set(eff["workloads"]) == {"b_cranfield", "d_rerank256", "c_query"}
    b = eff["workloads"]["b_cranfield"]
    assert b["gop_per_call_export"] == pytest.approx(sum(encoder_gop_per_doc(GRANITE_97M_SHAPE, n, True) for n in mixed))
    assert b["contenders"]["ST torch"]["gop_per_call"] == pytest.approx(
        sum(encoder_gop_per_doc(GRANITE_97M_SHAPE, n) for n in mixed))
    assert b["contenders"][auto]["gops"] == pytest.approx(b["gop_per_call_export"] / 0.5)
    d = eff["workloads"]["d_rerank256"]["contenders"][auto]
    assert d["gop_per_call"] == pytest.approx(20 * encoder_gop_per_doc(GRANITE_RERANKER_SHAPE, 274))   # full graph
    assert (d["peak"], d["fraction_of_peak"]) == ("int8", pytest.approx(d["gops"] / 640.0))
    assert eff["workloads"]["c_query"]["contenders"][auto]["gop_per_call"] == pytest.approx(
        encoder_gop_per_doc(GRANITE_97M_SHAPE, 32, True))
    table = markdown({"machine": {"date": "d", "cpu": "c", "physical_cores": 2, "logical_cpus": 2, "mhz": 2500.0,
                                  "memory_gib": 1, "flags": {}}, "quick": False, "sizes": {"rounds": 5},
                      "workloads": {}, "targets": [], "efficiency": eff})
    row = next(line for line in table.splitlines() if line.startswith(f"| {auto} |"))
    assert row.count("|") == 5 and f"{d['gops']:.0f}, {d['fraction_of_peak']:.0%} of int8+bf16" in row, row


def _folder_with_tokenizer_class(root: Path, tokenizer_class: str) -> Path:
    folder = root / "model"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"graph")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class, "cls_token": "<s>"}))
    return folder


def test_legacy_tokenizer_view_renames_the_class_for_transformers_4_without_touching_the_folder(tmp_path):
    from bench.adapters import legacy_tokenizer_view

    folder = _folder_with_tokenizer_class(tmp_path, "TokenizersBackend")
    view = legacy_tokenizer_view(folder, transformers_major=4, views=tmp_path / "views")
    assert view != folder and view.parent == tmp_path / "views"
    assert json.loads((view / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "cls_token": "<s>"}
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert (view / "onnx" / "model.onnx").stat().st_ino == (folder / "onnx" / "model.onnx").stat().st_ino  # linked
    assert legacy_tokenizer_view(folder, transformers_major=4, views=tmp_path / "views") == view  # reused
    (folder / "tokenizer.json").write_text('{"changed": true}')
    changed = legacy_tokenizer_view(folder, transformers_major=4, views=tmp_path / "views")
    assert changed != view and (changed / "tokenizer.json").read_text() == '{"changed": true}'


@pytest.mark.parametrize(("major", "tokenizer_class"), [(5, "TokenizersBackend"), (4, "PreTrainedTokenizerFast")])
def test_legacy_tokenizer_view_is_the_folder_itself_where_nothing_needs_renaming(tmp_path, major, tokenizer_class):
    from bench.adapters import legacy_tokenizer_view

    folder = _folder_with_tokenizer_class(tmp_path, tokenizer_class)
    assert legacy_tokenizer_view(folder, transformers_major=major, views=tmp_path / "views") == folder
    assert not (tmp_path / "views").exists()


def test_every_contender_runs_in_a_known_environment():
    from bench.contenders import CONTENDERS
    from bench.env import ENVS

    assert {c.env for c in CONTENDERS} - {"project"} <= set(ENVS)
    assert all(env.requirements.is_file() for env in ENVS.values())


def test_contender_precision_comes_from_the_worker_else_from_the_configuration():
    from bench.report import contender_precision

    avx2 = {"flags": {"avx512_bf16": False, "amx_bf16": False}}
    sapphire = {"flags": {"avx512_bf16": True, "amx_bf16": True}}
    assert contender_precision("granite-rt defaults (auto)", "int8", avx2) == "int8"
    assert contender_precision("granite-rt defaults (auto)", None, avx2) is None
    assert contender_precision("ST onnx", None, avx2) == "fp32"
    assert contender_precision("ST onnx INT8", None, avx2) == "int8"
    assert contender_precision("ST openvino INT8 IR", None, sapphire) == "int8"
    assert contender_precision("ST openvino", None, avx2) == "fp32"
    assert contender_precision("ST openvino", None, sapphire) == "bf16"
    assert contender_precision("ST torch", None, sapphire) == "fp32"
    assert contender_precision("OpenVINO GenAI", None, sapphire) == "bf16"   # the plugin's default hint
    assert contender_precision("OpenVINO GenAI INT8 IR", None, avx2) == "int8"


def test_inprocess_ratios_pair_each_round_with_the_references_time_in_that_round():
    from bench.inprocess import paired_ratios

    # the machine slows down 10x in round 2: per-round pairing keeps the ratio, a ratio of medians would not
    times = {"ref": [1.0, 10.0, 1.0], "fast": [0.5, 5.0, 0.5], "slow": [2.0, 20.0, 2.0]}
    assert paired_ratios(times, "ref") == {"ref": 1.0, "fast": 0.5, "slow": 2.0}


def test_ibm_file_contenders_load_the_ibm_style_folder_with_the_hub_file_names():
    from bench.contenders import CONTENDERS, IBM_FILES, by_name
    from bench.ibm_style import FILES, ONNX_DYNAMIC_INT8, dynamic_int8_file
    from granite_rt.host import cpu_flags

    ibm = {c.name: c for c in CONTENDERS if c.name.endswith(IBM_FILES)}
    assert set(ibm) == {f"{n}{IBM_FILES}" for n in ("ST onnx", "ST onnx dynamic INT8", "fastembed fp32",
                                                    "fastembed dynamic INT8", "ST openvino INT8 IR",
                                                    "granite-rt defaults (auto)")}
    assert all(c.files == "ibm-style" and c.kinds == ("embedder",) and not c.default for c in ibm.values())
    assert all(c.files == "granite-rt" for c in CONTENDERS if c.name not in ibm)
    assert [c.name for c in CONTENDERS if c.default] == ["granite-rt defaults (auto)"]  # the targets' contender
    files = {c.options.get("file_name") or c.options.get("model_file") for c in ibm.values()} - {None}
    assert files <= set(FILES)
    # the INT8 build a user of IBM's repo picks for this CPU: the VNNI one only where the CPU has VNNI
    assert dynamic_int8_file({"avx2", "avx512f", "avx512_vnni"}) == "onnx/model_qint8_avx512_vnni.onnx"
    assert dynamic_int8_file({"avx2", "avx512f"}) == dynamic_int8_file(set()) == "onnx/model_quint8_avx2.onnx"
    mine = dynamic_int8_file(cpu_flags())
    assert by_name(f"ST onnx dynamic INT8{IBM_FILES}").options["file_name"] == mine
    assert by_name(f"fastembed dynamic INT8{IBM_FILES}").options["model_file"] == mine
    assert set(ONNX_DYNAMIC_INT8.values()) < set(FILES)


def test_bench_model_gives_each_contender_its_folder_and_refuses_a_missing_ibm_style_one(tmp_path):
    from bench.models import BenchModel

    model = BenchModel("embedder", tmp_path / "checkpoint", tmp_path / "exported")
    assert model.files("granite-rt") == tmp_path / "exported"
    with pytest.raises(ValueError, match="no IBM-style folder"):
        model.files("ibm-style")
    ibm = BenchModel("embedder", tmp_path / "checkpoint", tmp_path / "exported", ibm_style=tmp_path / "ibm")
    assert ibm.files("ibm-style") == tmp_path / "ibm"


def test_ibm_style_build_that_fails_leaves_neither_the_folder_nor_a_partial_copy(tmp_path):
    import subprocess

    from bench.ibm_style import ensure_ibm_style

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    with pytest.raises(subprocess.CalledProcessError):
        ensure_ibm_style(checkpoint, tmp_path / "out" / "ibm", {"st-onnx": "false", "project": "false"}, log=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []
    assert (checkpoint / "config.json").read_text() == "{}"


def test_ibm_style_folder_of_the_tiny_checkpoint_has_the_hub_files(tiny_embedder_checkpoint, tmp_path):
    """The real build (sentence-transformers' export and dynamic INT8 in the st-onnx venv, NNCF here): IBM's file
    names, a plain graph (no contrib ops), dynamic INT8 in the quint8/qint8 files, and files granite-rt reads."""
    import sys

    import onnx

    from bench.env import ENVS
    from bench.ibm_style import FILES, ONNX_DYNAMIC_INT8, ONNX_FP32, ensure_ibm_style

    st_onnx = ENVS["st-onnx"].python
    if not st_onnx.exists():
        pytest.skip("bench/.venv-st-onnx not created (python -m bench makes it)")
    folder = ensure_ibm_style(tiny_embedder_checkpoint, tmp_path / "ibm", {"st-onnx": str(st_onnx), "project": sys.executable},
                              log=lambda _: None)
    assert all((folder / f).is_file() for f in FILES)
    assert (folder / "model.safetensors").stat().st_ino == (tiny_embedder_checkpoint / "model.safetensors").stat().st_ino
    graph = onnx.load(str(folder / ONNX_FP32), load_external_data=False).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}   # optimum's plain export: no com.microsoft fusions
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["last_hidden_state"]
    for path in ONNX_DYNAMIC_INT8.values():
        assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(str(folder / path)).graph.node}
    from granite_rt import Embedder

    assert Embedder(str(folder)).info["file"] not in ONNX_DYNAMIC_INT8.values()   # dtype="auto" never runs them
    on_ort = Embedder(str(folder), backend="onnx").info                          # where only they are INT8 ...
    assert (on_ort["file"], on_ort["dtype"]) == (ONNX_FP32, "fp32")
    assert "skipped: dynamic INT8" in on_ort["why"]                              # ... it says why it passed them over


def test_inprocess_model_has_its_ibm_style_folder_only_once_built(tmp_path):
    from bench.inprocess import cached_model

    exported = tmp_path / "models" / "embedder-abc" / "exported-1"
    exported.mkdir(parents=True)
    (exported / ".bench-ready").write_text("{}")
    ibm = tmp_path / "ibm-style" / "embedder-abc"
    ibm.mkdir(parents=True)
    assert cached_model("embedder", tmp_path / "models", tmp_path / "ibm-style").ibm_style is None  # a partial build
    (ibm / ".bench-ready").write_text("{}")
    model = cached_model("embedder", tmp_path / "models", tmp_path / "ibm-style")
    assert (model.exported, model.files("ibm-style")) == (exported, ibm)


def test_exporter_fingerprint_follows_the_int8_recipe_too(tmp_path, monkeypatch):
    import shutil

    from bench import models

    for name in ("export", *models.EXPORT_INPUTS):
        source, target = models.ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    monkeypatch.setattr(models, "ROOT", tmp_path)
    before = models.exporter_fingerprint()
    with open(tmp_path / "granite_rt" / "int8_recipe.py", "a") as f:
        f.write("\n# changed\n")
    assert models.exporter_fingerprint() != before
