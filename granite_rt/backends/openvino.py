"""OpenVINO backend: the IR compiled once; each thread runs its own infer request.

INFERENCE_PRECISION_HINT is always set from the placement's dtype: left alone, OpenVINO computes
in bf16 on CPUs that support it, which silently changes the results of an "fp32" model.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import openvino as ov

from granite_rt.backends import KNOWN_INPUTS, pick_output
from granite_rt.backends.base import Placement
from granite_rt.errors import DeviceUnavailableError, ModelFileError, UnsupportedModelError

PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
# INT8 rows are padded only to their own length rounded up to this (batching.py): padding a row further
# changes its fp32 attention sums by ~1e-7, which moves a few INT8 activations across a rounding step
# (all-MiniLM-L6-v2, 400 texts of 1-200 words alone vs one call: min cosine 0.99987, max |Δ| 2.4e-3 before,
# bitwise equal after). Widths rounded to 16 cost nothing measurable there (one call 25.1 s vs 26.1 s, load 15).
INT8_PAD_MULTIPLE = 16
_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """The process-wide OpenVINO Core (creating one is slow and they share plugins)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


class OpenVINOBackend:
    """A compiled OpenVINO IR on the placement's device (CPU when it names none)."""

    def __init__(self, folder: Path, placement: Placement, threads: int) -> None:
        self.placement = placement
        self.path = folder / placement.artifact.path
        self.device = placement.ov_device or "CPU"
        self.config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[placement.dtype], **placement.ov_config}
        if self.device == "CPU":
            self.config.setdefault("INFERENCE_NUM_THREADS", threads)
        if "CACHE_DIR" in self.config and not _writable(Path(self.config["CACHE_DIR"])):
            del self.config["CACHE_DIR"]  # a cache only saves time: an unwritable one must not stop loading
        # NPU: no dynamic shapes. One model per (batch, sequence) bucket, compiled on first use; the
        # smallest is compiled now so a device that cannot take the model fails at load (and falls back).
        self._buckets = tuple(sorted(placement.static_shapes))
        self._by_shape: dict[tuple[int, int], ov.CompiledModel] = {}
        self._compile_lock = threading.Lock()
        if self._buckets:
            self._model = self._read()
            self.compiled = self._compiled_for(*self._buckets[0])
        else:  # from the file: with CACHE_DIR, OpenVINO then loads the cached blob without reading the IR
            self.compiled = self._compile(str(self.path))
        # THROUGHPUT compiles several streams; each needs its own request in flight to be used.
        throughput = self.config.get("PERFORMANCE_HINT") == "THROUGHPUT" and not self._buckets
        self.parallel_requests = (int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                                  if throughput else 1)
        self.input_names = tuple(p.get_any_name() for p in self.compiled.inputs)
        unknown = sorted(set(self.input_names) - set(KNOWN_INPUTS))
        if unknown:
            raise UnsupportedModelError(f"{self.path} takes inputs {unknown}; granite-rt feeds only {KNOWN_INPUTS}")
        self._input_types = {p.get_any_name(): p.get_element_type().to_dtype() for p in self.compiled.inputs}
        outputs = [o.get_any_name() for o in self.compiled.outputs]
        self.output_name = pick_output(outputs)
        self._output_index = outputs.index(self.output_name)
        self._local = threading.local()
        self.pad_to_multiple_of = INT8_PAD_MULTIPLE if placement.dtype == "int8" and not self._buckets else 0

    def _read(self) -> ov.Model:
        try:
            return core().read_model(str(self.path), str(self.path.with_suffix(".bin")))
        except Exception as exc:  # noqa: BLE001 - any failure to read the IR is a file problem
            raise ModelFileError(f"{self.path} cannot be read by OpenVINO (truncated or corrupted? "
                                 f"re-export or re-download it): {exc}") from exc

    def _compile(self, model: ov.Model | str) -> ov.CompiledModel:
        try:
            return core().compile_model(model, self.device, {k: _ov_value(v) for k, v in self.config.items()})
        except Exception as exc:  # noqa: BLE001 - a file problem, else a device/plugin failure (may fall back)
            if isinstance(model, str):
                self._read()  # raises ModelFileError when the IR itself is unreadable
            raise DeviceUnavailableError(f"OpenVINO could not compile {self.path} for {self.device} "
                                         f"with {self.config}: {exc}") from exc

    def _compiled_for(self, batch: int, sequence: int) -> ov.CompiledModel:
        """The model compiled for the static shape [batch, sequence] (once per process)."""
        with self._compile_lock:
            if (batch, sequence) not in self._by_shape:
                model = self._model.clone()
                model.reshape({p.get_any_name(): ov.PartialShape([batch, sequence]) for p in model.inputs})
                self._by_shape[batch, sequence] = self._compile(model)
            return self._by_shape[batch, sequence]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One batch on this thread's infer request; the result is copied out of OpenVINO's buffer."""
        feed = {name: np.ascontiguousarray(inputs[name], dtype=kind) for name, kind in self._input_types.items()}
        return self._run_static(feed) if self._buckets else self._infer(self.compiled, feed)

    def _infer(self, compiled: ov.CompiledModel, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        requests = self._local.__dict__.setdefault("requests", {})
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        request = requests[id(compiled)]
        request.infer(feed)
        return request.get_output_tensor(self._output_index).data.copy()

    def _run_static(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """Pad up to the smallest bucket that fits (mask 0), split rows over the batch buckets, cut back."""
        rows, length = next(iter(feed.values())).shape
        sequence = min((s for _, s in self._buckets if s >= length), default=None)
        if sequence is None:
            longest = max(s for _, s in self._buckets)
            raise ValueError(f"a batch of {length} tokens exceeds the largest static shape ({longest} tokens) "
                             f"compiled for {self.device}; truncate inputs to {longest} tokens")
        sizes = sorted(b for b, s in self._buckets if s == sequence)
        parts, start = [], 0
        while start < rows:
            n = min(rows - start, sizes[-1])
            batch = min(b for b in sizes if b >= n)
            padded = {}
            for name, array in feed.items():
                padded[name] = np.zeros((batch, sequence), dtype=array.dtype)
                padded[name][:n, :length] = array[start:start + n]
                if name == "attention_mask":
                    padded[name][n:, 0] = 1  # padding rows attend to one token (no all-masked NaN rows)
            out = self._infer(self._compiled_for(batch, sequence), padded)[:n]
            parts.append(out[:, :length] if out.ndim >= 3 else out)  # token outputs carry a sequence axis
            start += n
        return np.concatenate(parts)

    def describe(self) -> dict[str, Any]:
        """Backend, device, the compile config actually used, precision and file."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "f32", "bf16", ...
        return {"backend": "openvino", "device": self.placement.device, "dtype": self.placement.dtype,
                "ov_device": self.device, "inference_precision": hint.to_string(),
                "cache_dir": self.config.get("CACHE_DIR"), "performance_hint": self.config.get("PERFORMANCE_HINT"),
                "file": self.placement.artifact.path,
                "inputs": list(self.input_names), "output": self.output_name}


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _ov_value(value: Any) -> Any:
    """Config values as OpenVINO's Python API takes them (strings for enums and numbers)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
