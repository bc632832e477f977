"""Open a model artifact on a backend; each implementation is imported only when it is used."""

from __future__ import annotations

import os
import re
from pathlib import Path

from granite_rt.backends.base import Artifact, Backend, Placement
from granite_rt.errors import BackendUnavailableError

# Output names the runtime reads, in preference order (ours/optimum, sentence-transformers' ONNX export).
OUTPUT_NAMES = ("last_hidden_state", "logits", "token_embeddings")
# Graph inputs the tokenizer can fill.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INSTALL = {"onnx": "pip install onnxruntime", "openvino": "pip install 'granite-rt[openvino]'"}

__all__ = ["Artifact", "Backend", "Placement", "open_backend", "physical_cores", "pick_output", "OUTPUT_NAMES"]


def open_backend(folder: Path, placement: Placement, *, threads: int | None = None) -> Backend:
    """Check ``placement.artifact``'s files (ModelFileError naming the file) and compile it on its backend."""
    from granite_rt.model_folder import verify_artifact

    verify_artifact(folder, placement.artifact)
    threads = threads or physical_cores()
    if placement.backend == "onnx":
        try:
            from granite_rt.backends.onnxruntime import OnnxRuntimeBackend
        except ImportError as exc:
            raise BackendUnavailableError(f"onnxruntime is not installed ({exc}); {_INSTALL['onnx']}") from exc
        return OnnxRuntimeBackend(folder, placement, threads)
    if placement.backend == "openvino":
        try:
            from granite_rt.backends.openvino import OpenVINOBackend
        except ImportError as exc:
            raise BackendUnavailableError(f"openvino is not installed ({exc}); {_INSTALL['openvino']}") from exc
        return OpenVINOBackend(folder, placement, threads)
    raise BackendUnavailableError(f"unknown backend {placement.backend!r}; expected 'onnx' or 'openvino'")


def pick_output(names: list[str]) -> str:
    """The graph output the runtime reads: a known name, else the first output."""
    return next((n for n in OUTPUT_NAMES if n in names), names[0])


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share execution units, so they don't help)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return usable
    siblings = re.search(r"siblings\s*:\s*(\d+)", text)
    per_core = re.search(r"cpu cores\s*:\s*(\d+)", text)
    if siblings and per_core and int(per_core.group(1)) > 0:  # threads per core, e.g. 2 with SMT
        smt = max(1, int(siblings.group(1)) // int(per_core.group(1)))
        return max(1, usable // smt)
    return usable
