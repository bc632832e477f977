"""The one protocol every backend implements, and the description of where a model runs.

Nothing outside ``granite_rt/backends`` and ``granite_rt/devices.py`` knows which backend runs:
the embedder and reranker hand tokenized arrays to ``Backend.run`` and get the output back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol

import numpy as np

BackendName = Literal["onnx", "openvino"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


@dataclass(frozen=True)
class Artifact:
    """One runnable model file in a model folder."""

    path: str                      # relative to the model folder, e.g. "onnx/model_qint8.onnx"
    backend: BackendName
    precision: Precision           # precision of the stored weights/graph ("bf16" is never stored)
    sha256: str | None = None      # from the manifest; checked at load when present
    # every file of the artifact with its manifest sha256 (an IR's .xml and .bin, ONNX external data)
    files: tuple[tuple[str, str], ...] = ()
    # why dtype="auto" skips it ("" = it may be chosen): the INT8 gate's missed bounds from the manifest
    # (granite_rt.int8_gate), or dynamic INT8 whose vectors depend on their batch neighbours
    not_recommended: str = ""


@dataclass(frozen=True)
class Placement:
    """A concrete choice: this artifact, on this backend and device, at this compute precision."""

    backend: BackendName
    device: str                    # user-facing name: cpu, cuda, tensorrt, directml, intel-gpu, npu
    dtype: Precision               # compute precision (bf16 = fp32 artifact with a bf16 hint)
    artifact: Artifact
    # onnxruntime: providers in priority order, each a name or (name, options).
    providers: tuple[str | tuple[str, Mapping[str, Any]], ...] = ()
    # openvino: device string ("CPU", "GPU", "NPU") and compile-time properties.
    ov_device: str = ""
    ov_config: Mapping[str, Any] = field(default_factory=dict)
    # onnxruntime: ort.SessionOptions attributes to set (enums by name, e.g. execution_mode="ORT_SEQUENTIAL").
    session_options: Mapping[str, Any] = field(default_factory=dict)
    # onnxruntime: bind inputs/outputs on the device with IOBinding (CUDA, TensorRT) instead of host copies.
    io_binding: bool = False
    # openvino: fixed (batch, sequence) shapes to compile (NPU); inputs are padded up to the smallest that fits.
    static_shapes: tuple[tuple[int, int], ...] = ()
    # why this placement was planned (for info); not part of its identity.
    why: str = field(default="", compare=False)


class Backend(Protocol):
    """A compiled model: named int64 inputs in, the model's one output out. Thread-safe."""

    placement: Placement
    input_names: tuple[str, ...]
    parallel_requests: int          # batches worth running at once (OpenVINO THROUGHPUT streams), else 1
    # 0: padding a row further does not change its result; k > 0: it does (bitwise), so each row is padded
    # only to its own length rounded up to a multiple of k, and batched with rows of that width (batching.py).
    pad_to_multiple_of: int

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch; ``inputs`` holds int64 arrays of shape (batch, sequence)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend, device, providers, precision, file."""
        ...
