"""onnxruntime backend: one InferenceSession per model, created once; ``run`` is thread-safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from granite_rt.backends import KNOWN_INPUTS, pick_output
from granite_rt.backends.base import Placement
from granite_rt.errors import DeviceUnavailableError, ModelFileError, UnsupportedModelError
from granite_rt.model_folder import artifact_files

_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
# Messages onnxruntime gives for a file it cannot parse (truncated, not ONNX, missing or short external data).
_FILE_ERRORS = ("protobuf parsing failed", "invalid_protobuf", "no_suchfile", "load model from",
                "model_path", "external data", "invalid model", "deserialize tensor", "getextdatafromtensorproto")


class OnnxRuntimeBackend:
    """A compiled ONNX graph on the providers the placement names (CPU when it names none)."""

    parallel_requests = 1  # one session uses every intra-op thread per run
    pad_to_multiple_of = 0  # static INT8 and fp32 rows are bitwise the same however far they are padded

    def __init__(self, folder: Path, placement: Placement, threads: int) -> None:
        self.placement = placement
        self.path = folder / placement.artifact.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        for key, value in placement.session_options.items():  # device-specific (DirectML: no mem pattern, ...)
            current = getattr(options, key)
            setattr(options, key, getattr(type(current), value) if isinstance(value, str) and
                    not isinstance(current, str) else value)
        providers = [p if isinstance(p, str) else (p[0], dict(p[1])) for p in placement.providers]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - sorted into a file error or a device error below
            text = f"{type(exc).__name__}: {exc}"
            if any(marker in text.lower() for marker in _FILE_ERRORS):
                weights = ", ".join(p.name for p in artifact_files(folder, placement.artifact)[1:])
                files = f"{self.path} (weights in {weights})" if weights else str(self.path)
                raise ModelFileError(f"{files} cannot be loaded by onnxruntime (truncated or corrupted? "
                                     f"re-export or re-download it): {exc}") from exc
            raise DeviceUnavailableError(f"onnxruntime could not create a session for {self.path} on "
                                         f"{providers or ['CPUExecutionProvider']}: {exc}") from exc
        self._input_types = {i.name: _input_type(i, self.path) for i in self.session.get_inputs()}
        self.input_names = tuple(self._input_types)
        self.output_name = pick_output([o.name for o in self.session.get_outputs()])
        first = providers[0] if providers else "CPUExecutionProvider"
        self._device_type = "cuda" if (first if isinstance(first, str) else first[0]) in _CUDA_PROVIDERS else "cpu"

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One batch through the session (onnxruntime's run is safe to call from several threads)."""
        feed = {name: np.ascontiguousarray(inputs[name], dtype=kind) for name, kind in self._input_types.items()}
        if not self.placement.io_binding:
            return self.session.run([self.output_name], feed)[0]
        binding = self.session.io_binding()  # inputs copied to the device once, output kept there until read
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.output_name, self._device_type)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> dict[str, Any]:
        """Backend, device, providers actually in use, precision and file."""
        return {"backend": "onnx", "device": self.placement.device, "dtype": self.placement.dtype,
                "providers": self.session.get_providers(), "file": self.placement.artifact.path,
                "inputs": list(self.input_names), "output": self.output_name}


def _input_type(node, path: Path) -> type:
    if node.name not in KNOWN_INPUTS:
        raise UnsupportedModelError(f"{path} takes input {node.name!r}; granite-rt feeds only {KNOWN_INPUTS}")
    if node.type not in _NUMPY_TYPES:
        raise UnsupportedModelError(f"{path}: input {node.name!r} is {node.type}, expected int64 or int32")
    return _NUMPY_TYPES[node.type]
