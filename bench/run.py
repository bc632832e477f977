"""``python -m bench [--quick]``: build/cache the models, run every workload interleaved, write the report."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench.contenders import COLD_START, CONTENDERS, Contender, by_name
from bench.env import ensure_env
from bench.harness import interleave, settle, warm_up
from bench.ibm_style import ensure_ibm_style
from bench.models import IBM_STYLE, ROOT, BenchModel, ensure_models
from bench.stats import summarize
from bench.workloads import FULL, QUICK, Sizes, Workload, build_workloads

RESULTS = ROOT / "bench" / "results"
WORKER_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
              "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


class WorkerError(RuntimeError):
    """A contender's process failed to load or run."""


class Worker:
    """A contender loaded in its own process (bench.worker), timed call by call."""

    def __init__(self, contender: Contender, kind: str, model: BenchModel, python: str, log_dir: Path):
        self.name = contender.name
        log = open(log_dir / f"{kind}-{contender.name.replace(' ', '_')}.log", "w")
        self.proc = subprocess.Popen([python, "-m", "bench.worker"], cwd=ROOT, env=WORKER_ENV, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        loaded = self._ask({"op": "load", "contender": contender.name, "kind": kind,
                            "checkpoint": str(model.checkpoint), "exported": str(model.files(contender.files))})
        self.load_s, self.precision = loaded["load_s"], loaded.get("precision")

    def _ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.name}: worker exited (code {self.proc.wait()}); see its log")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.name}: {reply['error']}")
        return reply

    def call(self, payload: dict) -> float:
        return self._ask({"op": "call", **payload})["seconds"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:  # the worker died (its error is in the results): nothing left to tell it
            pass
        self.proc.wait(timeout=60)


def ensure_pythons(contenders: list[Contender]) -> tuple[dict[str, str], dict[str, str]]:
    """The interpreter of every environment ``contenders`` run in (creating bench venvs on first use), and
    why each environment that could not be made is missing (its contenders are reported not available).

    The ``bench`` venv is always made, and must be: the report's chart is drawn with its matplotlib; ``st-onnx``
    wherever a contender loads the IBM-style files (sentence-transformers there exports them).
    """
    pythons, unavailable = {"project": sys.executable, "bench": str(ensure_env("bench"))}, {}
    envs = {c.env for c in contenders} | ({"st-onnx"} if any(c.files == "ibm-style" for c in contenders) else set())
    for env in sorted(envs - set(pythons)):
        try:
            pythons[env] = str(ensure_env(env))
        except (subprocess.CalledProcessError, OSError) as exc:  # e.g. a source build failing on this machine
            unavailable[env] = f"not available: the {env} environment could not be installed ({exc})"
            print(f"  {unavailable[env]}", flush=True)
    return pythons, unavailable


def _missing(contender: Contender, model: BenchModel, pythons: dict[str, str], unavailable: dict[str, str]) -> str | None:
    """Why ``contender`` cannot run in this bench (its environment or its files are missing), else None."""
    if contender.env not in pythons:
        return unavailable.get(contender.env, f"not available: no {contender.env} environment")
    if contender.files == "ibm-style" and model.ibm_style is None:
        return "not available: no IBM-style folder (bench.ibm_style needs the st-onnx environment)"
    return None


def run_kind(kind: str, workloads: list[Workload], model: BenchModel, sizes: Sizes, pythons: dict[str, str],
             log_dir: Path, only: set[str] | None, unavailable: dict[str, str] | None = None) -> dict:
    """Run the contenders of ``kind`` on its workloads, one group at a time: those on granite-rt's files, then
    those on the IBM-style files. With every embedder contender of a full run loaded at once (24 processes) the
    machine ran out of its 24 GiB (2026-12-02: "fastembed fp32 (IBM files)" killed for memory at 2.5 GB); within
    a group the workloads run interleaved, and the report's ratios across groups compare medians of one run.

    ``unavailable``: why an environment is missing (from ensure_pythons); its contenders are reported failed.
    """
    chosen = [c for c in CONTENDERS if kind in c.kinds and (not only or c.name in only)]
    results: dict = {}
    for files in dict.fromkeys(c.files for c in chosen):
        group = [c for c in chosen if c.files == files]
        for key, part in _run_group(kind, group, workloads, model, sizes, pythons, log_dir, unavailable).items():
            merged = results.setdefault(key, {k: v for k, v in part.items() if not isinstance(v, dict)})
            for field, values in part.items():
                if isinstance(values, dict):
                    merged.setdefault(field, {}).update(values)
    return results


def _run_group(kind: str, contenders: list[Contender], workloads: list[Workload], model: BenchModel, sizes: Sizes,
               pythons: dict[str, str], log_dir: Path, unavailable: dict[str, str] | None) -> dict:
    """Load ``contenders`` once each, run the workloads interleaved among them, close them."""
    results: dict = {}
    workers, failed = [], {}
    for contender in contenders:
        missing = _missing(contender, model, pythons, unavailable or {})
        if missing:
            failed[contender.name] = missing
            print(f"  {contender.name}: {missing}", flush=True)
            continue
        print(f"  loading {contender.name} ...", flush=True)
        try:
            workers.append(Worker(contender, kind, model, pythons[contender.env], log_dir))
        except WorkerError as exc:
            failed[contender.name] = str(exc)
            print(f"    FAILED: {exc}", flush=True)
    try:
        for wl in workloads:
            print(f"{wl.title}", flush=True)
            runners = [w for w in workers if w.name not in wl.skip]
            ok, wl_failed = warm_up(runners, wl.warmup or wl.payload)
            times = interleave(ok, wl.payload, wl.rounds or sizes.rounds, wl.calls_per_round, pause=settle,
                               on_call=lambda n, s: print(f"    {n:32s} {s:8.3f} s", flush=True), failed=wl_failed)
            for name, err in wl_failed.items():
                print(f"    {name} FAILED: {err}", flush=True)
            ok = [w for w in ok if w.name in times]
            results[wl.key] = {
                "title": wl.title, "kind": kind, "unit": wl.unit, "items": wl.items, "tokens": wl.tokens,
                "lengths": list(wl.lengths),
                "calls_per_round": wl.calls_per_round,
                "skipped": list(wl.skip), "failed": {**failed, **wl_failed},
                "load_s": {w.name: w.load_s for w in ok},
                "precision": {w.name: w.precision for w in ok if w.precision},
                "seconds": {name: asdict(summarize(ts)) for name, ts in times.items()},
                "raw_seconds": times,
            }
    finally:
        for worker in workers:
            worker.close()
    return results


def cold_start_env() -> dict[str, str]:
    """The workers' environment without PYTHONDONTWRITEBYTECODE, so that the warm-up round writes the bytecode of
    granite-rt's checkout (and bench's), as pip writes an installed package's and the peers' venvs have it.

    With it set (as on the machines of 2026-12-08), every cold start of granite-rt compiled its changed or new
    modules from source: 0.39-0.59 s to the first vector against 0.34-0.36 s with the bytecode written (4 fresh
    processes each, Zen 4).
    """
    return {k: v for k, v in WORKER_ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cold_start(model: BenchModel, rounds: int, pythons: dict[str, str], only: set[str] | None) -> dict:
    """(e) import + load + first vector in a fresh process, interleaved; one warm-up (page cache, bytecode)."""
    names = [n for n in COLD_START if not only or n in only]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    failed = {}
    for index in range(rounds + 1):
        for name in names:
            if name in failed:
                continue
            cmd = [pythons[by_name(name).env], "-m", "bench.coldstart", name,
                   str(model.checkpoint), str(model.exported)]
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=cold_start_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                failed[name] = f"exit code {proc.returncode}"
                continue
            if index == 0:
                continue  # warm-up: fills the page cache (and writes bytecode) for every contender alike
            report = json.loads(out.strip().splitlines()[-1])
            seconds[name].append(report["seconds"])
            wall[name].append(elapsed)
            # The child's own VmHWM; ru_maxrss (KiB on Linux) only where /proc is absent (it holds this runner's peak).
            rss[name].append(report.get("peak_rss_mib") or usage.ru_maxrss / 1024)
            print(f"    {name:32s} {seconds[name][-1]:6.2f} s  {rss[name][-1]:7.0f} MiB", flush=True)
    return {name: {"seconds": asdict(summarize(seconds[name])), "process_wall": asdict(summarize(wall[name])),
                   "peak_rss_mib": asdict(summarize(rss[name]))}
            for name in names if name not in failed} | {"failed": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny inputs, 2 rounds: a smoke run of a few minutes")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this contender (repeatable)")
    parser.add_argument("--workloads", default="abcde", help="subset of workloads, e.g. 'ac' (default abcde)")
    parser.add_argument("--reuse-export", action="store_true",
                        help="use the latest cached export even if the exporter's source changed since")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<timestamp>)")
    for kind in ("embedder", "reranker"):
        parser.add_argument(f"--{kind}", type=Path, metavar="DIR",
                            help=f"benchmark this {kind} folder (IBM Hub layout: weights + onnx/ + openvino/) "
                                 "instead of the random-weight bench model")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    only = set(args.only) if args.only else None
    out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")
    (out / "logs").mkdir(parents=True, exist_ok=True)

    selected = [c for c in CONTENDERS if not only or c.name in only]
    pythons, unavailable = ensure_pythons(selected)
    given = {kind: getattr(args, kind).resolve() for kind in ("embedder", "reranker") if getattr(args, kind)}
    needed = {"embedder"} if set(args.workloads) & set("abce") else set()
    needed |= {"reranker"} if "d" in args.workloads else set()
    models = ensure_models([kind for kind in sorted(needed) if kind not in given], reuse_export=args.reuse_export)
    # A given folder is IBM's own repo: its files are the IBM-style ones.
    models.update({kind: BenchModel(kind, folder, folder, ibm_style=folder) for kind, folder in given.items() if kind in needed})
    if "embedder" in models and models["embedder"].ibm_style is None and "st-onnx" in pythons and any(
            c.files == "ibm-style" for c in selected):
        embedder = models["embedder"]
        models["embedder"] = replace(embedder, ibm_style=ensure_ibm_style(
            embedder.checkpoint, IBM_STYLE / embedder.checkpoint.parent.name, pythons))
    workloads = [w for w in build_workloads(sizes, models) if w.key[0] in args.workloads]
    started = time.time()
    results: dict = {"quick": args.quick, "sizes": asdict(sizes), "workloads": {}}
    for kind in ("embedder", "reranker"):
        mine = [w for w in workloads if w.kind == kind]
        if mine:
            results["workloads"].update(run_kind(kind, mine, models[kind], sizes, pythons, out / "logs", only,
                                                 unavailable))
    if "e" in args.workloads:
        print("(e) cold start: import + load + first vector, fresh process", flush=True)
        results["cold_start"] = cold_start(models["embedder"], sizes.cold_rounds, pythons, only)
    results["duration_s"] = time.time() - started

    from bench.report import write_report

    write_report(results, models, out, pythons)
    print(f"results: {out}")
    return 0
