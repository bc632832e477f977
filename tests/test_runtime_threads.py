"""``threads=N`` caps the CPU threads a model computes on at N, tokenization included: on a long batch the
process's CPU time is at most N × wall time and exactly N threads do the work (per-thread CPU from /proc,
so the check holds on a loaded machine, where CPU time per wall second falls below N: a working thread
is one with more than a tenth of the process's CPU time)."""

from __future__ import annotations

import json
import sys

import pytest

from torch_blocked import run_without_torch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")

MEASURE = """
import json, os, time
from granite_rt import Embedder

def cpu_by_thread():
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / ticks
    return out

model = Embedder(FOLDER, backend=BACKEND, dtype="fp32", threads=THREADS)
texts = [f"sentence {i} on the boundary layer of a flat plate in supersonic flow " * 6 for i in range(128)]
model.encode(texts[:16])
before, cpu0, wall0 = cpu_by_thread(), time.process_time(), time.perf_counter()
model.encode(texts, batch_size=32)
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
after = cpu_by_thread()
per_thread = sorted((after[t] - before.get(t, 0.0) for t in after), reverse=True)
print(json.dumps({"wall": wall, "cpu": cpu, "per_thread": per_thread}))
"""


def measure(folder, backend: str, threads: int) -> dict:
    code = MEASURE.replace("FOLDER", repr(str(folder))).replace("BACKEND", repr(backend)).replace(
        "THREADS", str(threads))
    return json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend,folder_kind", [("onnx", "export"), ("openvino", "hub")])
@pytest.mark.parametrize("threads", [1, 2])
def test_threads_caps_cpu_time_and_working_threads(minilm_folders, backend, folder_kind, threads):
    m = measure(minilm_folders[folder_kind], backend, threads)
    working = [c for c in m["per_thread"] if c > 0.1 * m["cpu"]]  # share of the work, not of wall time (load)
    print(f"\n{backend} threads={threads}: wall {m['wall']:.2f} s, cpu {m['cpu']:.2f} s "
          f"({m['cpu'] / m['wall']:.2f} x wall), per thread {[round(c, 2) for c in m['per_thread'][:4]]}")
    assert m["cpu"] > 0.5  # a long batch: long enough for the 10 ms CPU clock
    assert m["cpu"] <= m["wall"] * threads * 1.1 + 0.05
    assert len(working) == threads, m


AT_REST = """
import json, time
from granite_rt import Embedder

model = Embedder(FOLDER, backend="onnx", dtype="fp32", threads=2)
burned = []
for _ in range(3):
    model.encode(["the boundary layer of a flat plate in supersonic flow"])
    before = time.process_time()
    time.sleep(0.2)
    burned.append(time.process_time() - before)
print(json.dumps({"burned": burned}))
"""


def test_a_model_at_rest_burns_no_cpu_after_a_call(minilm_folders):
    """onnxruntime's intra-op workers stop spinning when a run ends: left spinning, they burned ~40 ms of a core
    after every call (granite_rt/backends/onnxruntime.py), taken from whatever the process ran next."""
    code = AT_REST.replace("FOLDER", repr(str(minilm_folders["export"])))
    burned = json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])["burned"]
    assert max(burned) < 0.01, burned   # CPU seconds in the 0.2 s after each call
