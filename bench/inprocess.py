"""``python -m bench.inprocess``: contenders in ONE process, interleaved call by call, paired ratios per round.

For a machine other jobs load (2 shared cores at load 10–20 make one call 5–10× slower and drift by the
minute): every contender of one environment is loaded through the same adapters as ``python -m bench``,
then each round times each contender once, back to back (order rotating), and the result is the median
over rounds of each contender's time divided by the reference's time *in the same round*. Run it with the
bench venv's python (``bench/.venv/bin/python -m bench.inprocess ...``) to have the peers and granite-rt
side by side: that venv sees the project's site-packages after its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from bench import adapters
from bench.contenders import by_name
from bench.data import Cutter, cranfield_docs, cranfield_queries
from bench.harness import round_order, settle
from bench.ibm_style import READY
from bench.models import CACHE, IBM_STYLE, BenchModel
from bench.stats import paired_ratio


def paired_ratios(times: dict[str, list[float]], reference: str) -> dict[str, float | None]:
    """Median over rounds of (contender's time / reference's time in the same round)."""
    return {name: paired_ratio(ts, times[reference]) for name, ts in times.items()}


def payload(kind: str, workload: str, size: int, tokenizer_json: Path) -> tuple:
    """The call's arguments: (a) ``size`` × 512-token docs, (b) ``size`` Cranfield abstracts, (c) one 32-token
    query; reranker: one query × ``size`` passages of ``workload`` tokens (256, 512)."""
    if kind == "reranker":
        return cranfield_queries()[0], Cutter(tokenizer_json).pieces(size, int(workload), seed=3)
    if workload == "a":
        return (Cutter(tokenizer_json).pieces(size, 512, seed=1),)
    if workload == "b":
        corpus = cranfield_docs()
        random.Random(0).shuffle(corpus)
        return (corpus[:size],)
    return (Cutter(tokenizer_json).pieces(1, 32, seed=2),)


def cached_model(kind: str, cache: Path = CACHE, ibm_style_root: Path = IBM_STYLE) -> BenchModel:
    """The latest finished export of the bench model ``kind`` (``python -m bench`` builds it; this module runs
    in the bench venv, which cannot import the export stage), with its IBM-style folder where one was built."""
    done = sorted(cache.glob(f"{kind}-*/exported-*/.bench-ready"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no finished {kind} export under {cache}: run python -m bench (project venv) first")
    exported = done[-1].parent
    ibm_style = ibm_style_root / exported.parent.name
    return BenchModel(kind, exported.parent / "checkpoint", exported,
                      ibm_style=ibm_style if (ibm_style / READY).exists() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--kind", choices=("embedder", "reranker"), default="embedder")
    parser.add_argument("--workload", default="a", help="a | b | c (embedder); 256 | 512 (reranker passages)")
    parser.add_argument("--size", type=int, default=8, help="documents, abstracts or passages per call")
    parser.add_argument("--calls", type=int, default=1, help="timed calls per contender per round (median)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", required=True, metavar="NAME",
                        help="contender (repeatable); the first is the reference of the ratios")
    args = parser.parse_args(argv)
    model = cached_model(args.kind)
    calls = {}
    for name in args.only:
        contender = by_name(name)
        calls[name] = adapters.load(contender, args.kind, model.checkpoint, model.files(contender.files))
    call_args = payload(args.kind, args.workload, args.size, model.tokenizer_json)
    for call in calls.values():
        call(*call_args)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(args.rounds):
        for name in round_order(list(calls), index):
            settle()
            each = []
            for _ in range(args.calls):
                start = time.perf_counter()
                calls[name](*call_args)
                each.append(time.perf_counter() - start)
            times[name].append(float(np.median(each)))
    print(json.dumps({"kind": args.kind, "workload": args.workload, "size": args.size, "rounds": args.rounds,
                      "load_after": os.getloadavg(), "median_s": {n: float(np.median(t)) for n, t in times.items()},
                      "ratio_to_" + args.only[0]: paired_ratios(times, args.only[0]), "raw_s": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
