"""Turn the measurements into results.json, results.md (tables + targets) and results.png."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.contenders import by_name
from bench.harness import SETTLE_S
from bench.machine import encoder_gop_per_doc, machine_info, peak_gops
from bench.stats import paired_ratio, time_ratios
from granite_rt.model_folder import MANIFEST

DEFAULT = "granite-rt defaults (auto)"
PEERS = ("ST torch", "ST openvino", "fastembed INT8")
BEST_PEER = "best peer"   # the fastest contender of that workload that is not granite-rt, in the same run
# (issue, workload, peer, comparison, bound): "speedup" = t_peer / t_default ≥ bound; "time" = t_default / t_peer ≤ bound.
TARGETS = (
    (8, "a_docs512", "ST openvino", "speedup", 1.3),
    (8, "a_docs512", "fastembed INT8", "speedup", 1.5),
    (8, "a_docs512", "ST torch", "speedup", 8.0),
    (8, "b_cranfield", "ST openvino", "speedup", 1.3),
    (8, "c_query", "ST openvino", "time", 0.5),
    (8, "d_rerank256", "ST openvino", "time", 0.75),
    (8, "d_rerank512", "ST openvino", "time", 0.75),
    (21, "a_docs512", BEST_PEER, "speedup", 1.2),
    (21, "b_cranfield", BEST_PEER, "speedup", 2.0),
    (21, "c_query", BEST_PEER, "time", 0.8),
    (21, "d_rerank256", BEST_PEER, "time", 0.8),
    (21, "d_rerank512", BEST_PEER, "time", 0.8),
)
# (issue, cold-start metric, bound against ST torch)
COLD_TARGETS = ((8, "seconds", 0.15), (8, "peak_rss_mib", 0.35), (21, "seconds", 0.10), (21, "peak_rss_mib", 0.25))
VERSIONS = ("granite-rt", "onnxruntime", "openvino", "tokenizers", "numpy", "torch", "transformers",
            "sentence-transformers", "optimum", "optimum-intel", "optimum-onnx", "fastembed", "openvino-genai",
            "llama-cpp-python", "gguf")


def versions(python: str) -> dict[str, str]:
    """Installed versions of the benchmarked libraries in one environment."""
    code = ("import json, importlib.metadata as m\nout = {}\nfor d in %r:\n    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))") % (VERSIONS,)
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True).stdout or "{}")


def medians(workload: dict) -> dict[str, float]:
    return {name: s["median"] for name, s in workload["seconds"].items()}


def best_peer(med: dict[str, float]) -> str | None:
    """The contender with the least median time that is not granite-rt (names outside bench.contenders count as peers)."""
    def is_peer(name: str) -> bool:
        try:
            return by_name(name).family != "granite-rt"
        except KeyError:
            return not name.startswith("granite-rt")

    peers = [name for name in med if is_peer(name)]
    return min(peers, key=med.__getitem__) if peers else None


def same_round_ratio(workload: dict, name: str, peer: str) -> float | None:
    """Median over rounds of ``name``'s time / ``peer``'s time in the same round (bench.stats.paired_ratio); None
    where the two ran in different groups (granite-rt's files, IBM-style files: their rounds are minutes apart)
    or the run kept no per-call times."""
    raw = workload.get("raw_seconds", {})
    if name not in raw or peer not in raw or _files(name) != _files(peer) or _files(name) is None:
        return None
    return paired_ratio(raw[name], raw[peer], workload.get("calls_per_round", 1))


def _files(name: str) -> str | None:
    """Whose files a contender loads, which is its group in run.run_kind (None: not a bench contender)."""
    try:
        return by_name(name).files
    except KeyError:
        return None


def check_targets(results: dict) -> list[dict]:
    """Each target of issues 8 and 21 with the achieved same-run ratio (None where a side did not run)."""
    rows = []
    for issue, key, peer, how, bound in TARGETS:
        med = medians(results["workloads"][key]) if key in results["workloads"] else {}
        if peer == BEST_PEER:
            peer = best_peer(med) or BEST_PEER
        achieved = paired = None
        if DEFAULT in med and peer in med:
            achieved = med[peer] / med[DEFAULT] if how == "speedup" else med[DEFAULT] / med[peer]
            paired = same_round_ratio(results["workloads"][key], DEFAULT, peer)
            if paired is not None and how == "speedup":
                paired = 1 / paired
        rows.append({"issue": issue, "workload": key, "peer": peer, "comparison": how, "bound": bound,
                     "achieved": achieved, "paired": paired,
                     "met": None if achieved is None else (achieved >= bound if how == "speedup" else achieved <= bound)})
    cold = results.get("cold_start", {})
    for issue, metric, bound in COLD_TARGETS:
        achieved = None
        if DEFAULT in cold and "ST torch" in cold:
            achieved = cold[DEFAULT][metric]["median"] / cold["ST torch"][metric]["median"]
        rows.append({"issue": issue, "workload": f"e_cold_{metric}", "peer": "ST torch",
                     "comparison": "time" if metric == "seconds" else "rss",
                     "bound": bound, "achieved": achieved, "met": None if achieved is None else achieved <= bound})
    return rows


def contender_precision(name: str, reported: str | None, machine: dict) -> str | None:
    """The precision a contender computes in: as its worker reported it (granite-rt), else by its configuration."""
    if reported:
        return reported
    lowered = name.lower()
    named = next((p for p in ("int8", "bf16", "fp32") if p in lowered), None)
    if named:
        return named
    try:
        options = by_name(name).options
    except KeyError:
        return None
    file = options.get("file_name") or options.get("model_file")
    if file:
        return "int8" if "qint8" in file else "fp32"
    if options.get("backend") == "openvino" or "file" in options:  # the CPU plugin's default hint (OpenVINO GenAI
        # too): bf16 where the CPU has it
        flags = machine.get("flags", {})
        return "bf16" if flags.get("avx512_bf16") or flags.get("amx_bf16") else "fp32"
    return "fp32" if options.get("backend") == "torch" else None


def runs_export(name: str) -> bool:
    """Whether contender ``name`` runs a graph of granite-rt's export (not the checkpoint, a GGUF of it or the
    IBM-style files)."""
    try:
        contender = by_name(name)
    except KeyError:
        return False
    return contender.files == "granite-rt" and contender.family != "llama.cpp" and contender.options.get("backend") != "torch"


def efficiency(results: dict, configs: dict[str, dict], machine: dict,
               first_position: dict[str, bool] | None = None) -> dict:
    """Achieved GOP/s of each contender on every workload against the CPU's peak for its precision.

    ``configs``: the model config of each kind (embedder, reranker) whose workloads are counted, by the tokens of
    each item of a call (``lengths``, recorded since 2026-12-08).
    ``first_position[kind]``: granite-rt's export of that kind is the first-position-only graph; the contenders
    running it are counted by its ops, the others (checkpoint, IBM-style files, GGUF) by the full model's.
    """
    peaks = peak_gops(machine)
    out: dict = {"peaks_gops": peaks, "peaks_measured": bool(machine.get("measured_peaks_gops")), "workloads": {}}
    for key, wl in results["workloads"].items():
        kind = wl.get("kind", "embedder")
        lengths = wl.get("lengths")
        if kind not in configs or not lengths:
            continue
        full = sum(encoder_gop_per_doc(configs[kind], n) for n in lengths)
        pruned = (sum(encoder_gop_per_doc(configs[kind], n, first_position=True) for n in lengths)
                  if (first_position or {}).get(kind) else full)
        contenders = {}
        for name, s in wl["seconds"].items():
            precision = contender_precision(name, wl.get("precision", {}).get(name), machine)
            per_call = pruned if runs_export(name) else full
            gops = per_call / s["median"]
            unit = (precision or "").split("+")[0]  # int8+bf16: its quantized MatMuls, the bulk of the work, are int8
            peak = {"fp16": "fp32"}.get(unit, unit)  # fp16 weights (llama.cpp F16): ggml's CPU dot products run in fp32
            contenders[name] = {"gops": gops, "gop_per_call": per_call, "precision": precision, "peak": peak,
                                "fraction_of_peak": gops / peaks[peak] if peak in peaks else None}
        out["workloads"][key] = {"gop_per_call": full, "gop_per_call_export": pruned, "contenders": contenders}
    return out


def _efficiency_lines(eff: dict) -> list[str]:
    """One row per contender, one column per workload: GOP/s and its share of the peak of its precision."""
    workloads = eff.get("workloads", {})
    if not workloads:
        return []
    names = list(dict.fromkeys(n for w in workloads.values() for n in w["contenders"]))
    counted = "; ".join(
        f"{key} {w['gop_per_call']:.1f}" + ("" if w["gop_per_call_export"] == w["gop_per_call"]
                                             else f" ({w['gop_per_call_export']:.1f} in granite-rt's export)")
        for key, w in workloads.items())
    lines = ["", "### Efficiency: arithmetic per second against this CPU's peak", "",
             ("peak, measured on this machine (bench/peak_probe.c, every core at once): " if eff.get("peaks_measured")
              else "peak, nominal (cpuinfo's clock × ops per cycle, bench.machine.peak_gops): ")
             + ", ".join(f"{k} {v:.0f} GOP/s" for k, v in eff["peaks_gops"].items()),
             "", f"GOP per call, counted from the shape and each item's tokens: {counted} (granite-rt's "
             "first-position-only export counted for the contenders running it).", "",
             "| contender |" + "".join(f" {key} |" for key in workloads), "|---|" + "---:|" * len(workloads)]
    for name in names:
        cells = []
        for w in workloads.values():
            e = w["contenders"].get(name)
            if e is None:
                cells.append(" – |")
                continue
            same = e.get("peak") in (None, (e["precision"] or "").split("+")[0])
            of = e["precision"] if same else f"{e['peak']} ({e['precision']} weights)"
            frac = "" if e["fraction_of_peak"] is None else f", {e['fraction_of_peak']:.0%} of {of}"
            cells.append(f" {e['gops']:.0f}{frac} |")
        lines.append(f"| {name} |" + "".join(cells))
    return lines


def _fmt_rate(wl: dict, s: dict) -> str:
    if wl["unit"] == "docs/s":
        return f"{wl['items'] / s['median']:.2f} docs/s"
    if wl["unit"] == "ms":
        return f"{s['median'] * 1e3:.1f} ms"
    return f"{s['median']:.2f} s"


def _fmt_span(wl: dict, s: dict) -> str:
    scale, unit = (1e3, "ms") if wl["unit"] == "ms" else (1, "s")
    return f"{s['min'] * scale:.3g}–{s['max'] * scale:.3g} {unit}"


def markdown(results: dict) -> str:
    """The tables: per workload, medians and same-run ratios; then the targets."""
    m = results["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    clock = f"{m['mhz']} MHz" + (f" (cpuinfo; {m['measured_mhz']:.0f} MHz measured with every core busy)"
                                 if m.get("measured_mhz") else "")
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['physical_cores']} cores ({m['logical_cpus']} logical), "
             f"{clock}, {m['memory_gib']} GiB; {flags}. "
             f"{'QUICK smoke run — not a measurement. ' if results['quick'] else ''}"
             f"{results['sizes']['rounds']} interleaved rounds ((a): {results['sizes'].get('docs512_rounds', '?')}, "
             f"(b): {results['sizes'].get('corpus_rounds', results['sizes']['rounds'])}, "
             f"(c): {results['sizes'].get('query_rounds', '?')} of {results['sizes'].get('query_calls', '?')} calls) "
             f"after one warm-up call each, a {SETTLE_S} s pause before each contender's turn; "
             "'× peer' = peer's median time / this contender's median time (above 1: faster than the peer).", ""]
    for key, wl in results["workloads"].items():
        med = medians(wl)
        peers = [p for p in PEERS if p in med]
        lines += [f"### {wl['title']}", "", f"tokens: {wl['tokens']}", "",
                  "| contender | median | min–max |" + "".join(f" × {p} |" for p in peers),
                  "|---|---:|---:|" + "---:|" * len(peers)]
        for name, s in wl["seconds"].items():
            bold = "**" if name == DEFAULT else ""
            ratios = "".join(" — |" if p == name else f" {med[p] / s['median']:.2f} |" for p in peers)
            lines.append(f"| {bold}{name}{bold} | {_fmt_rate(wl, s)} | {_fmt_span(wl, s)} |{ratios}")
        empty = " |" * len(peers)
        for name, err in wl["failed"].items():
            lines.append(f"| {name} | failed: {err[:160].replace('|', '/')} | |{empty}")
        for name in wl["skipped"]:
            lines.append(f"| {name} | not run (too slow for the time budget) | |{empty}")
        lines.append("")
    cold = results.get("cold_start")
    if cold:
        lines += ["### (e) cold start: import + load + first vector (fresh process)", "",
                  "| contender | import+load+first vector | process wall | peak RSS | × ST torch time | × ST torch RSS |",
                  "|---|---:|---:|---:|---:|---:|"]
        base = cold.get("ST torch")
        for name, c in cold.items():
            if name == "failed":
                continue
            rt = f"{c['seconds']['median'] / base['seconds']['median']:.3f}" if base else "—"
            rr = f"{c['peak_rss_mib']['median'] / base['peak_rss_mib']['median']:.3f}" if base else "—"
            lines.append(f"| {name} | {c['seconds']['median']:.2f} s | {c['process_wall']['median']:.2f} s | "
                         f"{c['peak_rss_mib']['median']:.0f} MiB | {rt} | {rr} |")
        for name, err in cold["failed"].items():
            lines.append(f"| {name} | failed: {err} | | | | |")
        lines.append("")
    lines += ["### Targets (granite-rt defaults, same-run median ratios)", "",
              "'met' compares the ratio of the medians; 'same round' is the median of the ratios within each round "
              "(bench.stats.paired_ratio: the machine's drift between rounds cancels), where both ran in one group.",
              "", "| issue | workload | peer | target | achieved | same round | met |", "|---|---|---|---|---:|---:|---|"]
    for t in results["targets"]:
        sign = "≥" if t["comparison"] == "speedup" else "≤"
        what = {"speedup": "speed ×", "time": "time ×", "rss": "peak RSS ×"}[t["comparison"]]
        got = "not run" if t["achieved"] is None else f"{t['achieved']:.2f}"
        paired = "—" if t.get("paired") is None else f"{t['paired']:.2f}"
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t.get('issue', '')} | {t['workload']} | {t['peer']} | {what} {sign} {t['bound']} | {got} | "
                     f"{paired} | {met} |")
    lines += _efficiency_lines(results.get("efficiency") or {})
    return "\n".join(lines) + "\n"


def write_report(results: dict, models: dict, out: Path, pythons: dict[str, str]) -> None:
    """results.json, results.md and results.png (drawn with the bench venv's matplotlib)."""
    results["machine"] = machine_info()
    results["versions"] = {env: versions(python) for env, python in pythons.items()}
    results["models"] = {k: str(v.exported) for k, v in models.items()}
    results["models"].update({f"{k} (IBM files)": str(v.ibm_style) for k, v in models.items() if v.ibm_style})
    results["ratios"] = {k: time_ratios(medians(w)) for k, w in results["workloads"].items()}
    results["targets"] = check_targets(results)
    configs = {kind: json.loads((m.checkpoint / "config.json").read_text()) for kind, m in models.items()}
    first_position = {kind: (m.exported / MANIFEST).exists()
                      and json.loads((m.exported / MANIFEST).read_text()).get("first_position_only", False)
                      for kind, m in models.items()}
    results["efficiency"] = efficiency(results, configs, results["machine"], first_position)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    subprocess.run([pythons["bench"], "-m", "bench.chart", str(out / "results.json"), str(out / "results.png")],
                   check=False)
