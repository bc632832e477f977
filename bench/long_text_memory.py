"""Peak RSS of long inputs in truncate mode: 1, 8 and 32 texts of 8k and 32k tokens, full-size 97m shape.

Each case runs in a fresh subprocess (so peaks do not mix) under an address-space limit (so a case
that would need more memory fails cleanly instead of waking the OOM killer on a shared machine);
the peak is the child's VmHWM, which it reports itself, or the last one the parent read while it
ran when the case is stopped at its time limit (not wait4's ru_maxrss, which includes the parent's
peak). Run: ``python -m bench.long_text_memory [--cases 1x8192,8x8192] [--backend auto --dtype auto]
[--update-docs]`` (default: fp32 ONNX on onnxruntime; ``auto``/``auto`` is the runtime's default CPU path).
Results: bench/results/long_text_memory[-BACKEND-DTYPE].json; ``--update-docs`` writes the table into docs/long-text.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "long_text_memory.json"
DOCS = ROOT / "docs" / "long-text.md"
DEFAULT_CASES = "1x512,1x8192,8x8192,32x8192,1x32768,8x32768,32x32768"
TABLE_START, TABLE_END = "<!-- long-text-memory:start -->", "<!-- long-text-memory:end -->"


def model_folder(log=print) -> Path:
    """The full-size random 97m multilingual shape as the benchmark exports it (bench.models; cached outside git)."""
    from bench.models import ensure_models

    return ensure_models(["embedder"], log=log)["embedder"].exported


def worker(folder: str, texts_file: str, backend: str = "onnx", dtype: str = "fp32") -> None:
    """Child: load the model, encode the texts in truncate mode, print one JSON line of figures."""
    texts = json.loads(Path(texts_file).read_text())
    from granite_rt import Embedder

    emb = Embedder(folder, backend=backend, dtype=dtype, device="cpu")
    placement = f"{emb.info['backend']} {emb.info['dtype']} ({emb.info['file']})"
    loaded_mib = peak_rss_mib()
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    start = time.perf_counter()
    vectors, truncated = emb.encode(texts, batch_size=32, long_text="truncate", return_truncation=True,
                                    show_progress_bar=True)
    print(json.dumps({"seconds": time.perf_counter() - start, "loaded_peak_mib": loaded_mib,
                      "peak_rss_mib": round(peak_rss_mib(), 1), "placement": placement,
                      "rss_after_load_mib": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
                      "shape": list(vectors.shape), "truncated": int(truncated.sum())}), flush=True)


def run_case(folder: Path, texts: list[str], time_limit: float, mem_limit_gib: float, backend: str = "onnx",
             dtype: str = "fp32") -> dict:
    """One case in a fresh child under RLIMIT_AS; peak RSS is the child's VmHWM (its own report, else the last
    one read while it ran: also when stopped at the time limit)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    limit = int(mem_limit_gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench.long_text_memory", "--worker", str(folder), f.name,
                                 "--backend", backend, "--dtype", dtype],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=cap)
        status = "ok"
        deadline = start + time_limit
        peak = None
        while True:
            peak = peak_rss_mib(proc.pid) or peak
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                _, code, usage = os.wait4(proc.pid, 0)
                status = "time limit"
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(code)
        out = proc.stdout.read()
        err.seek(0)
        stderr = err.read()
    os.unlink(f.name)
    done = re.findall(r"batches (\d+)/(\d+)", stderr)
    result = {"status": status, "peak_rss_mib": round(peak or usage.ru_maxrss / 1024, 1),
              "wall_seconds": round(time.perf_counter() - start, 1),
              "batches_done": f"{done[-1][0]}/{done[-1][1]}" if done else "0/?"}
    if status == "ok" and proc.returncode != 0:
        result["status"] = "failed"
        result["error"] = stderr.strip().splitlines()[-1][:300] if stderr.strip() else f"exit {proc.returncode}"
    if status == "ok" and proc.returncode == 0:
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def make_texts(tokenizer_json: Path, n: int, tokens: int) -> list[str]:
    """``n`` Cranfield texts of exactly ``tokens`` tokens (special tokens included), cached next to the models."""
    cache = tokenizer_json.parent.parent / f"long-text-texts-{tokens}.json"
    texts = json.loads(cache.read_text()) if cache.exists() else []
    if len(texts) < n:
        from bench.data import Cutter

        texts = Cutter(tokenizer_json).pieces(n, tokens)
        cache.write_text(json.dumps(texts))
    return texts[:n]


def table(results: dict) -> str:
    """Markdown table of the results."""
    rows = [f"**{results.get('artifact', 'fp32 ONNX')}**", "",
            "| texts × tokens | status | peak RSS (MiB) | RSS after load (MiB) | encode (s) | batches |",
            "|---|---|---:|---:|---:|---|"]
    for case in results["cases"]:
        rows.append(f"| {case['n']} × {case['tokens']} | {_status(case)} | {case['peak_rss_mib']:.0f} | "
                    f"{_figure(case, 'rss_after_load_mib', '.0f')} | {_figure(case, 'seconds', '.1f')} | "
                    f"{case['batches_done']} |")
    m = results["machine"]
    rows.append("")
    what = results.get("artifact", "fp32 ONNX")
    versions = f"onnxruntime {m['onnxruntime']}" + (f", openvino {m['openvino']}" if m.get("openvino") else "")
    when = f", {results['date']}" if results.get("date") else ""
    rows.append(f"Machine: {m.get('description') or ''} {m['cpus']} CPUs, {m['platform']}, {versions}{when}; {what}, "
                f"token budget {results['max_batch_tokens']} padded tokens per batch, address-space limit "
                f"{results['mem_limit_gib']} GiB, time limit {results['time_limit_s']} s per case; one run per case.")
    return "\n".join(rows)


def _status(case: dict) -> str:
    """ok / time limit / failed, with the failing allocation's node for onnxruntime arena failures."""
    if case["status"] != "failed":
        return case["status"]
    node = re.search(r"Name:'([^']+)'", case.get("error", ""))
    kind = "allocation failed" if "Arena" in case.get("error", "") else "failed"
    return f"{kind}{' in ' + node.group(1) if node else ''}"


def _figure(case: dict, key: str, fmt: str) -> str:
    return format(case[key], fmt) if key in case else "–"


def update_docs(*runs: dict) -> None:
    """Replace the table between the markers of docs/long-text.md with one table per run."""
    text = DOCS.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{DOCS} has no {TABLE_START} … {TABLE_END} markers")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    tables = "\n\n".join(table(run) for run in runs)
    DOCS.write_text(f"{head}{TABLE_START}\n{tables}\n{TABLE_END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated NxTOKENS (default: %(default)s)")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds per case (default: %(default)s)")
    parser.add_argument("--mem-limit-gib", type=float, default=14, help="address-space cap per child")
    parser.add_argument("--model", type=Path, help="an exported folder to use instead of the cached 97m export")
    parser.add_argument("--machine", default="", help="words describing the machine, for the table")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/long-text.md")
    parser.add_argument("--render", nargs="+", type=Path, metavar="RESULTS_JSON",
                        help="only write the tables of saved results files (e.g. runs on other machines) into the docs")
    parser.add_argument("--backend", default="onnx", choices=["auto", "onnx", "openvino"],
                        help="runtime backend (default: %(default)s)")
    parser.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "int8"],
                        help="compute precision (default: %(default)s; auto = INT8 on CPU)")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "TEXTS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, backend=args.backend, dtype=args.dtype)
        return 0
    if args.render:
        update_docs(*(json.loads(path.read_text()) for path in args.render))
        return 0
    import datetime

    import onnxruntime

    from granite_rt.batching import MAX_BATCH_TOKENS

    try:
        import openvino
        ov_version = openvino.__version__.split("-")[0]
    except ImportError:
        ov_version = None
    folder = args.model or model_folder()
    cases = [tuple(int(x) for x in case.split("x")) for case in args.cases.split(",")]
    default = (args.backend, args.dtype) == ("onnx", "fp32")
    artifact = "fp32 ONNX" if default else f"backend={args.backend}, dtype={args.dtype} (see placement)"
    results = {"model": f"random GRANITE_97M_MULTILINGUAL_R2 shape, {artifact}", "artifact": artifact,
               "backend": args.backend, "dtype": args.dtype, "date": datetime.date.today().isoformat(),
               "max_batch_tokens": MAX_BATCH_TOKENS, "mem_limit_gib": args.mem_limit_gib, "time_limit_s": args.time_limit,
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "onnxruntime": onnxruntime.__version__,
                           "openvino": ov_version, "description": args.machine}, "cases": []}
    results_path = RESULTS if default else RESULTS.with_name(f"{RESULTS.stem}-{args.backend}-{args.dtype}.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    for n, tokens in cases:
        texts = make_texts(folder / "tokenizer.json", n, tokens)
        case = {"n": n, "tokens": tokens, **run_case(folder, texts, args.time_limit, args.mem_limit_gib,
                                                     args.backend, args.dtype)}
        print(json.dumps(case), flush=True)
        results["cases"].append(case)
        if case.get("placement"):
            results["artifact"] = case["placement"]
        results_path.write_text(json.dumps(results, indent=2))
    print(table(results))
    if args.update_docs:
        update_docs(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
