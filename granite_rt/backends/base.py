"""The backend seam: what a backend is (``BackendType``, registered in ``granite_rt.backends``), what it
opens (a compiled ``Backend``), and the description of where a model runs (``Artifact``, ``Placement``).

Nothing outside ``granite_rt/backends`` knows an engine's files, options or loading: the planner
(``granite_rt.devices``) reads the registered types, and the embedder and reranker hand tokenized
arrays to ``Backend.run`` and get the output back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping, Protocol, Sequence

import numpy as np

BackendName = str                     # a registered backend's name: "onnx", "openvino", ...
Precision = Literal["fp32", "fp16", "bf16", "int8", "int8+bf16"]

# Output names the runtime reads, in preference order (ours/optimum, sentence-transformers' ONNX export).
OUTPUT_NAMES = ("last_hidden_state", "logits", "token_embeddings")
# Graph inputs the tokenizer can fill.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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
    # the INT8 gate's figures against fp32 from the manifest (mean_cosine, p1_cosine, ...; granite_rt.int8_gate):
    # what granite_rt.tune takes as this file's fidelity at dtype="int8" instead of measuring it again
    gate: tuple[tuple[str, float], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Placement:
    """A concrete choice: this artifact, on this backend and device, at this compute precision."""

    backend: BackendName
    device: str                    # user-facing name: cpu, cuda, tensorrt, directml, intel-gpu, npu, ...
    dtype: Precision               # compute precision (bf16 = fp32 artifact with a bf16 hint, int8+bf16 = int8
                                   # artifact with a bf16 hint for its unquantized ops)
    artifact: Artifact
    options: Any = None            # the backend's own frozen options (OrtOptions, OpenVINOOptions, ...)
    # why this placement was planned (for info); not part of its identity.
    why: str = field(default="", compare=False)


@dataclass(frozen=True)
class EngineInventory:
    """What one backend's engine offers on this machine (``BackendType.probe``)."""

    version: str | None = None                                   # None: not installed or unusable
    devices: tuple[str, ...] = ()                                # the engine's names of devices present
    names: Mapping[str, str] = field(default_factory=dict)       # engine device -> full device name
    capabilities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None                                     # why the engine cannot be used
    device_errors: Mapping[str, str] = field(default_factory=dict)  # user device -> why it is unusable
    distributions: tuple[str, ...] = ()                          # Python distributions providing the engine
    complete: bool = True          # False: the engine was not imported (asked lazily where it matters)


@dataclass(frozen=True)
class PlanContext:
    """What a backend's ``options`` may depend on besides (device, dtype, artifact)."""

    engine: EngineInventory
    cache_key: str | None          # per model file (None: on-disk caches off); see devices.artifact_key
    cache_dir: Path | None
    workload: str                  # latency | throughput
    # a latency load may run a call of several batches side by side (SideBySide); False where granite_rt.tune
    # measured that slower on this machine
    side_by_side: bool = True


@dataclass(frozen=True)
class SideBySide:
    """How a backend runs a call of several batches when that differs from how it runs one: ``workers`` batches
    at once through ``run`` (onnxruntime on the CPU: one-thread runs side by side, ``OnnxRuntimeBackend``).

    A call that forms one batch keeps the backend's own ``run``, so a query still gets every thread; a call of
    several is cut so that each of the ``workers`` gets an even share (``batching.balanced_batches``), and where
    no cut can do that (one text outweighs a share) it runs on the backend's own ``run`` too."""

    run: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    workers: int


class Backend(Protocol):
    """A compiled model: named int64 inputs in, the model's one output out. Thread-safe."""

    placement: Placement
    input_names: tuple[str, ...]
    parallel_requests: int          # batches worth running at once (OpenVINO THROUGHPUT streams), else 1
    # 0: padding a row further does not change its result; k > 0: it does (bitwise), so each row is padded
    # only to its own length rounded up to a multiple of k, and batched with rows of that width (batching.py).
    # A backend without the attribute counts as 0.
    pad_to_multiple_of: int
    # None: a call of several batches runs them as it runs one; else how it runs them (SideBySide). A backend
    # without the attribute counts as None.
    side_by_side: SideBySide | None

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch; ``inputs`` holds int64 arrays of shape (batch, sequence)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend, device, providers, precision, file."""
        ...


class BackendType:
    """One backend: its engine, the devices it drives, its files in a model folder, its options and opener.

    Subclass it in the backend's own module and register an instance (``granite_rt.backends.register``);
    the defaults here suit a backend with one file per stored precision. A backend module must not import
    its engine at module import time: ``import granite_rt`` stays light.
    """

    name: ClassVar[str]                              # the value of backend=...
    engine: ClassVar[str]                            # the engine's Python distribution (and import) name
    install: ClassVar[str]                           # the command that installs it
    devices: ClassVar[Mapping[str, str]]             # user-facing device -> the engine's name for it
    # (device, compute dtype) -> stored precisions that can run it, best first; absent: unsupported.
    runnable: ClassVar[Mapping[tuple[str, str], tuple[str, ...]]]
    # stored precision -> canonical path in a model folder (what the export writes and the Hub repos use).
    file_names: ClassVar[Mapping[str, str]]

    # ---- this machine
    def probe(self, full: bool = False) -> EngineInventory:
        """What the engine offers here; ``full`` may import it for names and capabilities (``info``)."""
        raise NotImplementedError

    def present(self, engine: EngineInventory, device: str) -> bool:
        """Whether ``device`` is reachable through this backend here."""
        wanted = self.devices.get(device)
        return wanted is not None and device not in engine.device_errors and any(
            d == wanted or d.startswith(wanted + ".") for d in engine.devices)

    def absent_reason(self, engine: EngineInventory, device: str) -> str:
        """Why ``device`` is not reachable through this backend (with the fix)."""
        if engine.version is None:
            return f"{self.engine} is not installed ({engine.error or self.install})"
        if device in engine.device_errors:
            return engine.device_errors[device]
        return f"{self.engine} {engine.version} offers {list(engine.devices)}, not {self.devices.get(device, device)}"

    def unsupported_dtype(self, engine: EngineInventory, device: str, dtype: str) -> str | None:
        """Why this device cannot compute at ``dtype`` here although an artifact could run it, else None."""
        return None

    def conflict(self, engine: EngineInventory) -> str | None:
        """A warning worth raising whenever this backend is planned (a broken install), else None."""
        return None

    def engine_line(self, engine: EngineInventory) -> str:
        """One line for ``granite-rt info``: the engine's version and devices."""
        if engine.version is None:
            return f"{self.engine}: not installed ({engine.error or ''}); {self.install}"
        return f"{self.engine} {engine.version}: devices {', '.join(engine.devices) or 'none'}"

    # ---- model files
    def precision_of(self, filename: str) -> Precision | None:
        """The stored precision a file name denotes (None: not a file of this backend)."""
        return next((p for p, path in self.file_names.items() if path.rsplit("/", 1)[-1] == filename), None)

    def discover(self, folder: Path) -> list[Artifact]:
        """The artifacts of this backend in a folder without manifest, best first within each precision."""
        found = []
        for path in self.file_names.values():
            precision = self.precision_of(path.rsplit("/", 1)[-1])
            if (folder / path).is_file() and precision is not None:
                found.append(Artifact(path, self.name, precision))
        return sorted(found, key=self.rank)

    def rank(self, artifact: Artifact) -> tuple[int, str]:
        """Sort key among artifacts of one precision: canonical names first."""
        return (0 if artifact.path in self.file_names.values() else 1, artifact.path)

    def runs_here(self, filename: str) -> bool:
        """Whether this CPU can run a file the Hub ships per instruction set."""
        return True

    def hub_patterns(self, precision: str) -> tuple[str, ...]:
        """snapshot_download patterns of the files of ``precision`` (sidecars included)."""
        return (self.file_names[precision],) if precision in self.file_names else ()

    def files(self, folder: Path, artifact: Artifact) -> list[Path]:
        """The files an artifact consists of, the graph first (then weights and other sidecars)."""
        return [folder / artifact.path]

    def check_files(self, files: Sequence[Path]) -> None:
        """Raise ModelFileError when the files are visibly incomplete (beyond existing and being non-empty)."""

    # ---- planning and opening
    def options(self, device: str, dtype: str, artifact: Artifact, ctx: PlanContext) -> Any:
        """This backend's settings for one candidate placement (documented in docs/devices.md)."""
        return None

    def open(self, folder: Path, placement: Placement, threads: int) -> Backend:
        """Compile ``placement`` (files already verified) with ``threads`` intra-op threads."""
        raise NotImplementedError


def pick_output(names: list[str]) -> str:
    """The graph output the runtime reads: a known name, else the first output."""
    return next((n for n in OUTPUT_NAMES if n in names), names[0])


def stored_precision(filename: str) -> Precision:
    """The precision a Hub-style file name carries: fp16, int8 (qint8, quint8, quantized) or fp32."""
    if "fp16" in filename or "_O4" in filename:
        return "fp16"
    return "int8" if re.search(r"q?u?int8|quantized", filename) else "fp32"
