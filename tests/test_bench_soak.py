"""bench.soak, bounded: 8 clients x 50 requests against ``granite-rt serve`` on the all-MiniLM-L6-v2 export.

The server's memory must stay within its budget whatever the mix of batch sizes and lengths: RSS growth
after warm-up < 150 MiB (unbucketed, OpenVINO INT8 grew 197 -> 718 MiB over 640 such requests). Every
request must be answered and every vector must be the in-process Embedder's for the same text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]


def test_bounded_soak_holds_memory_and_answers_every_request_exactly(exported_minilm, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--model", str(exported_minilm), "--clients", "8", "--requests", "50",
         "--max-batch", "16", "--max-words", "120", "--warmup", "64", "--no-plot", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    served = data["servers"]["granite-rt"]
    assert served["requests"] == served["ok"] == 400, served["statuses"]
    assert served["rss_growth_after_warmup_mib"] < 150, served["rss_samples"][-5:]
    assert data["check"]["equal"], data["check"]   # OpenVINO INT8 included: rows padded by their own length
    assert "backend=" in data["startup"] and "file=" in data["startup"], data["startup"]
