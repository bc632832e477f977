"""The GPU check under pytest: only with GRANITE_RT_GPU_TESTS=1 on a machine with onnxruntime-gpu."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(os.environ.get("GRANITE_RT_GPU_TESTS") != "1",
                                 reason="GPU check: set GRANITE_RT_GPU_TESTS=1 on a machine with onnxruntime-gpu")]


def test_embedder_and_reranker_on_gpu_match_cpu_fp32(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    import check_gpu

    assert check_gpu.main(["--build-tiny", "--work", str(tmp_path)]) == 0
