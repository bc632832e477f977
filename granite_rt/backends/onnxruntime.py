"""onnxruntime backend: its files (``onnx/*.onnx`` + external data), execution providers, options and session.

onnxruntime itself is imported only when a session is created or its providers are asked for: this
module is imported with ``granite_rt`` and must stay light.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from granite_rt import host
from granite_rt.backends.base import (KNOWN_INPUTS, Artifact, BackendType, EngineInventory, PlanContext, Placement,
                                      SideBySide, pick_output, stored_precision)
from granite_rt.errors import DeviceUnavailableError, ModelFileError, UnsupportedModelError

# Python distributions that each ship the `onnxruntime` import package (installing two breaks it).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-cann",
                     "onnxruntime-silicon", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu",
                     "ort-nightly-directml")
TENSORRT_LIBRARY = {"Windows": "nvinfer_10.dll", "Linux": "libnvinfer.so.10"}
_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
# A session whose runs go side by side (parallel_batches: workload="throughput", and a latency load's sibling) plans
# no memory pattern: onnxruntime keeps a pattern block per input shape for each run in flight. Without it (97m INT8,
# Zen 4, peak RSS): a latency load's sibling, 200 Cranfield abstracts 412 -> 349 MiB (64: 308 -> 257, 16: 243 -> 211),
# the time unchanged (same-round 0.999x / 1.008x / 1.029x at 64 / 200 / 16 abstracts, 40 x 256 tokens 1.009x); a
# throughput load, 200 abstracts 332 -> 292 MiB on 2 threads, 400 abstracts 808 -> 517 MiB on 8, the time unchanged
# (0.993x / 0.98x at 64 / 200 abstracts, 1.026x at 8 x 512 tokens; 2026-12-07).
_SIDE_BY_SIDE_SESSION_OPTIONS = {"enable_mem_pattern": False}
# Messages onnxruntime gives for a file it cannot parse (truncated, not ONNX, missing or short external data).
_FILE_ERRORS = ("protobuf parsing failed", "invalid_protobuf", "no_suchfile", "load model from",
                "model_path", "external data", "invalid model", "deserialize tensor", "getextdatafromtensorproto")
_DEVICE_HINTS = {
    "cuda": "install onnxruntime-gpu (instead of onnxruntime) and the CUDA / cuDNN libraries it was built for",
    "tensorrt": "install onnxruntime-gpu and TensorRT (libnvinfer) next to CUDA",
    "directml": "install onnxruntime-directml (Windows) instead of onnxruntime",
}


class OnnxRuntimeConflictWarning(UserWarning):
    """More than one onnxruntime distribution is installed; they overwrite each other's files."""


@dataclass(frozen=True)
class OrtOptions:
    """How a session is created: providers in priority order (a name or (name, options)), SessionOptions
    attributes to set (enums by name, e.g. execution_mode="ORT_SEQUENTIAL"), whether inputs and the
    output are bound on the device with IOBinding (CUDA, TensorRT) instead of host copies, whether
    batches run side by side, one intra-op thread each (``parallel_batches``: the CPU's workload="throughput"), and
    whether a latency load on several CPU threads runs a call of several batches so (``side_by_side``; off where
    ``granite-rt tune`` measured it slower here), and where a CPU session keeps its optimized graph between
    processes (``graph_cache``, a folder; None: optimized at every load, see ``OnnxRuntimeBackend``)."""

    providers: tuple[str | tuple[str, Mapping[str, Any]], ...] = ()
    session_options: Mapping[str, Any] = field(default_factory=dict)
    io_binding: bool = False
    parallel_batches: bool = False
    side_by_side: bool = True
    graph_cache: Path | None = None


class OnnxRuntime(BackendType):
    name = "onnx"
    engine = "onnxruntime"
    install = "pip install onnxruntime"
    devices = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
               "directml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider"}
    # TensorRT builds its own fp16 engine from the fp32 graph (trt_fp16_enable).
    runnable = {("cpu", "fp32"): ("fp32",), ("cpu", "int8"): ("int8",), ("cpu", "fp16"): ("fp16",),
                ("cuda", "fp32"): ("fp32",), ("cuda", "fp16"): ("fp16",),
                ("tensorrt", "fp32"): ("fp32",), ("tensorrt", "fp16"): ("fp32", "fp16"),
                ("directml", "fp32"): ("fp32",), ("directml", "fp16"): ("fp16",)}
    file_names = {"fp32": "onnx/model.onnx", "fp16": "onnx/model_fp16.onnx", "int8": "onnx/model_qint8.onnx"}
    # IBM's repos ship INT8 per instruction set (model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx, ...).
    _hub_int8 = ("onnx/model_qint8*.onnx", "onnx/model_quint8*.onnx")

    # ---- this machine
    def probe(self, full: bool = False) -> EngineInventory:
        """Providers of the installed onnxruntime (known without importing it for the plain CPU build)."""
        dists = distributions()
        if dists == ("onnxruntime",):  # the CPU build: 26 MB not imported when OpenVINO is chosen
            version, providers = host.installed_version("onnxruntime"), ("CPUExecutionProvider",)
        else:
            try:
                import onnxruntime as ort  # the engine, asked for its providers
            except ImportError as exc:  # absent or broken: the reason goes into info
                return EngineInventory(error=f"import onnxruntime failed: {exc}", distributions=dists)
            version, providers = ort.__version__, tuple(ort.get_available_providers())
        device_errors = {}
        if "TensorrtExecutionProvider" in providers:  # listed by every onnxruntime-gpu, usable only with TensorRT
            missing = tensorrt_missing()
            if missing:
                providers = tuple(p for p in providers if p != "TensorrtExecutionProvider")
                device_errors["tensorrt"] = missing
        return EngineInventory(version, providers, device_errors=device_errors, distributions=dists)

    def present(self, engine: EngineInventory, device: str) -> bool:
        return self.devices.get(device, "") in engine.devices

    def absent_reason(self, engine: EngineInventory, device: str) -> str:
        if engine.version is None or device in engine.device_errors:
            return super().absent_reason(engine, device)
        hint = _DEVICE_HINTS.get(device, "")
        return (f"onnxruntime {engine.version} offers {list(engine.devices)}, not "
                f"{self.devices.get(device, device)}" + (f"; {hint}" if hint else ""))

    def conflict(self, engine: EngineInventory) -> str | None:
        return onnxruntime_conflict(engine.distributions)

    def engine_line(self, engine: EngineInventory) -> str:
        if engine.version is None:
            return f"onnxruntime: not installed ({engine.error or ''})"
        return (f"onnxruntime {engine.version} ({', '.join(engine.distributions) or 'distribution unknown'}): "
                f"providers {', '.join(engine.devices)}")

    # ---- model files
    def precision_of(self, filename: str):
        return stored_precision(filename) if filename.endswith(".onnx") else None

    def discover(self, folder: Path) -> list[Artifact]:
        found = [Artifact(p.relative_to(folder).as_posix(), self.name, stored_precision(p.name),
                          not_recommended=DYNAMIC_INT8 if stored_precision(p.name) == "int8" and is_dynamic_int8(p)
                          else "")
                 for p in sorted((folder / "onnx").glob("*.onnx")) if self.runs_here(p.name)]
        if (folder / "model.onnx").is_file():  # flat layout (optimum / older exports)
            found.append(Artifact("model.onnx", self.name, "fp32"))
        return sorted(found, key=self.rank)

    def rank(self, artifact: Artifact) -> tuple[int, str]:
        """Canonical names first (ours / IBM's), then the ISA-specialised INT8 files (most specific first)."""
        name = artifact.path.rsplit("/", 1)[-1]
        if artifact.path in self.file_names.values():
            return (0, name)
        specialised = 1 if "avx512_vnni" in name else 2 if "avx512" in name else 3
        return (specialised if "int8" in name else 4, name)

    def runs_here(self, filename: str) -> bool:
        """Hub repos ship INT8 files per instruction set; skip those this CPU cannot run."""
        arm, flags = host.is_arm(), host.cpu_flags()
        if "arm64" in filename:
            return arm
        if "avx512_vnni" in filename:
            return not arm and {"avx512f", "avx512_vnni"} <= flags
        if "avx512" in filename:
            return not arm and "avx512f" in flags
        if "avx2" in filename:
            return not arm and "avx2" in flags
        return True

    def hub_patterns(self, precision: str) -> tuple[str, ...]:
        graphs = self._hub_int8 if precision == "int8" else (self.file_names.get(precision),)
        return tuple(p for g in graphs if g for p in (g, g + "_data"))

    def files(self, folder: Path, artifact: Artifact) -> list[Path]:
        """The graph and, when present, its external data (``<file>_data``, memory-mapped on CPU)."""
        main = folder / artifact.path
        data = folder / (artifact.path + "_data")
        return [main, data] if data.exists() else [main]

    # ---- planning and opening
    def options(self, device: str, dtype: str, artifact: Artifact, ctx: PlanContext) -> OrtOptions:
        cuda = ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"})
        if device == "tensorrt":
            trt: dict[str, Any] = {"device_id": 0, "trt_fp16_enable": dtype == "fp16"}
            if ctx.cache_dir is not None and ctx.cache_key is not None:  # an engine build takes seconds to minutes
                engines = str(ctx.cache_dir / "tensorrt" / ctx.cache_key)
                trt.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": engines,
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": engines})
            providers: tuple = (("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider")
        elif device == "cuda":
            providers = (cuda, "CPUExecutionProvider")
        elif device == "directml":
            providers = (("DmlExecutionProvider", {"device_id": 0}), "CPUExecutionProvider")
        else:
            providers = ("CPUExecutionProvider",)
        session = {"enable_mem_pattern": False, "execution_mode": "ORT_SEQUENTIAL"} if device == "directml" else {}
        graphs = (ctx.cache_dir / "onnxruntime" / ctx.cache_key
                  if device == "cpu" and ctx.cache_dir is not None and ctx.cache_key is not None else None)
        return OrtOptions(providers, session, io_binding=device in ("cuda", "tensorrt"),
                          parallel_batches=device == "cpu" and ctx.workload == "throughput",
                          side_by_side=ctx.side_by_side, graph_cache=graphs)

    def open(self, folder: Path, placement: Placement, threads: int) -> "OnnxRuntimeBackend":
        return OnnxRuntimeBackend(folder, placement, threads, self.files(folder, placement.artifact))


ONNXRUNTIME = OnnxRuntime()


# Why dtype="auto" passes over a dynamic INT8 ONNX file (IBM's model_quint8_avx2.onnx ..., optimum's dynamic
# quantization): activation scales are computed over the whole padded batch, so a vector changes with its batch
# neighbours (all-MiniLM-L6-v2: cosine down to 0.987 alone vs batched, docs/export.md).
DYNAMIC_INT8 = ("dynamic INT8: its vectors depend on their batch neighbours (cosine down to 0.987 measured); "
                "`granite-rt quantize FOLDER` writes a static, batch-invariant INT8")


def is_dynamic_int8(path: Path) -> bool:
    """Whether an ONNX file quantizes activations at run time (DynamicQuantizeLinear). The graph's nodes are
    serialized before its weights, so the first 8 MiB hold every op type."""
    try:
        with open(path, "rb") as fh:
            return b"DynamicQuantizeLinear" in fh.read(8 << 20)
    except OSError:
        return False


class OnnxRuntimeBackend:
    """A compiled ONNX graph on the providers the placement names (CPU when it names none).

    A run uses every intra-op thread, except with ``OrtOptions.parallel_batches`` (the CPU's workload="throughput"):
    then each run gets one thread and ``parallel_requests`` = the threads runs go at once (onnxruntime runs a
    one-thread session's ops on the calling thread; the outputs are bitwise those of the threaded session). Measured
    2026-12-07 (random-weight Granite shapes, INT8, 2-core AMD EPYC Zen 4, avx512_vnni + avx512_bf16; one process,
    5-9 interleaved rounds, medians of the same-round ratios, three runs): 97m 8 x 512 tokens 0.87-0.96x the time
    of one 2-thread batch, 64 Cranfield abstracts 0.75-0.94x; reranker 20 x 256 / 20 x 512 / 4 x 256-token pairs
    0.95x / 0.95-0.96x / 0.94-0.97x. A single row cannot be split, and one thread runs a 32-token query 1.41x
    slower than two, so latency loads keep the threaded runs for a call of one batch; a call of several runs them
    on a one-thread sibling session side by side (``side_by_side``, opened on the first such call): 64 Cranfield
    abstracts 0.73x the time, 200 abstracts 0.81x, 40 x 256 tokens 0.93x (same machine, one process, interleaved),
    at a memory cost: the 97m INT8 file's peak RSS over three calls of 64 / 200 abstracts 197 -> 257 / 243 -> 331 MiB
    (the sibling plans no memory pattern, and the batches in flight hold at most one batch's tokens in all; before
    either, 309 / 455 MiB, and 1110 MiB on 8 threads against 300 one batch after another, now 587-620;
    docs/runtime.md).
    """

    pad_to_multiple_of = 0  # static INT8 and fp32 rows are bitwise the same however far they are padded

    def __init__(self, folder: Path, placement: Placement, threads: int, files: Sequence[Path] = ()) -> None:
        import onnxruntime as ort  # the engine: imported when a model is opened, not with granite_rt

        self.placement = placement
        self.options: OrtOptions = placement.options or OrtOptions()
        self.path = folder / placement.artifact.path
        # batches side by side, one thread each; else one batch at a time on every thread
        self.parallel_requests = threads if self.options.parallel_batches else 1
        providers = [p if isinstance(p, str) else (p[0], dict(p[1])) for p in self.options.providers]
        self.graph_cache = "off"   # describe(): how the optimized graph was had (off | saved | loaded)
        try:
            self.session = self._session(ort, threads, providers or ["CPUExecutionProvider"], files)
        except Exception as exc:  # noqa: BLE001 - sorted into a file error or a device error below
            text = f"{type(exc).__name__}: {exc}"
            if any(marker in text.lower() for marker in _FILE_ERRORS):
                weights = ", ".join(p.name for p in files[1:])
                described = f"{self.path} (weights in {weights})" if weights else str(self.path)
                raise ModelFileError(f"{described} cannot be loaded by onnxruntime (truncated or corrupted? "
                                     f"re-export or re-download it): {exc}") from exc
            raise DeviceUnavailableError(f"onnxruntime could not create a session for {self.path} on "
                                         f"{providers or ['CPUExecutionProvider']}: {exc}") from exc
        self._input_types = {i.name: _input_type(i, self.path) for i in self.session.get_inputs()}
        self.input_names = tuple(self._input_types)
        self.output_name = pick_output([o.name for o in self.session.get_outputs()])
        first = providers[0] if providers else "CPUExecutionProvider"
        self._device_type = "cuda" if (first if isinstance(first, str) else first[0]) in _CUDA_PROVIDERS else "cpu"
        # A latency session on several CPU threads runs a call of several batches on a one-thread sibling, side by
        # side (see the class docstring); the sibling opens on the first such call.
        self._folder, self._threads, self._files = folder, threads, files
        self._sibling: OnnxRuntimeBackend | None = None
        self._sibling_lock = threading.Lock()
        self.side_by_side = (SideBySide(self._run_side_by_side, threads) if placement.device == "cpu" and threads > 1
                             and self.parallel_requests == 1 and self.options.side_by_side else None)

    def _session_options(self, ort, threads: int):
        """A fresh SessionOptions for this placement (each session attempt gets its own)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads // self.parallel_requests
        options.inter_op_num_threads = 1
        if self.placement.device == "cpu" and options.intra_op_num_threads > 1:
            # The intra-op workers stop spinning when a run ends (they still spin between a run's ops). Left
            # spinning, they burned 42-49 ms of a core after every run (97m INT8, 2 threads, Zen 4, 2026-12-08:
            # process CPU over 0.2 s idle after a 16-token run; 0.1 ms so), taken from whatever ran next: a call's
            # side-by-side batches right after threaded runs took 0.223 / 0.217 s against 0.190 / 0.183 s after
            # side-by-side ones, and 0.181 / 0.191 against 0.179 / 0.187 s with this. Queries back to back:
            # 0.98-0.99x the time (1 x 16 / 32 / 128 tokens, two sessions in one process, blocks of 40 alternating).
            options.add_session_config_entry("session.force_spinning_stop", "1")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session_options = {**(_SIDE_BY_SIDE_SESSION_OPTIONS if self.options.parallel_batches else {}),
                           **self.options.session_options}
        for key, value in session_options.items():  # device-specific (DirectML: no mem pattern, ...)
            current = getattr(options, key)
            setattr(options, key, getattr(type(current), value) if isinstance(value, str) and
                    not isinstance(current, str) else value)
        return options

    def _session(self, ort, threads: int, providers: list, files: Sequence[Path]):
        """The session, its graph optimized by onnxruntime, or read already optimized from ``graph_cache``.

        onnxruntime optimizes the graph at every load (fusions, constant folding, layout): 124-169 ms of the
        97m INT8 file's 0.35 s cold start (2-core Zen 4, 2026-12-08). A CPU session writes the optimized graph
        once (``optimized_model_filepath``; ~1.5 MB, its weights still read from the model's own external data
        file) and later loads read it with optimizations off: 80 ms, bitwise the same outputs, the same peak RSS.
        The file is keyed by the model files (paths, sizes, mtimes), onnxruntime's version and this CPU (model and
        flags: the optimized graph may hold CPU-specific layouts); one that fails to load is deleted and the graph
        optimized again.
        """
        cached = self._graph_file(ort, providers, files)
        if cached is not None and cached.is_file():
            options = self._session_options(ort, threads)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                             str(self.path.parent))
            try:
                session = ort.InferenceSession(cached.read_bytes(), sess_options=options, providers=providers)
            except Exception:  # noqa: BLE001 - a damaged or foreign cache file: optimize again, without it
                cached.unlink(missing_ok=True)
            else:
                self.graph_cache = "loaded"
                return session
        options = self._session_options(ort, threads)
        staged = None
        if cached is not None and host.writable_dir(cached.parent):
            staged = cached.with_name(f"{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            options.optimized_model_filepath = str(staged)
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        if staged is not None:
            try:
                os.replace(staged, cached)   # whole or not at all, for processes loading it at the same time
                self.graph_cache = "saved"
            except OSError:
                staged.unlink(missing_ok=True)
        return session

    def _graph_file(self, ort, providers: list, files: Sequence[Path]) -> Path | None:
        """Where this session's optimized graph is cached: CPU sessions with a cache folder only."""
        if self.options.graph_cache is None or providers != ["CPUExecutionProvider"]:
            return None
        parts = [ort.__version__, json.dumps(host.cpu_facts())]
        for path in files or (self.path,):
            try:
                stat = path.stat()
            except OSError:
                return None   # a missing file: the load reports it
            parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
        return self.options.graph_cache / f"{self.path.stem}-{key}.onnx"

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One batch through the session (onnxruntime's run is safe to call from several threads)."""
        feed = {name: np.ascontiguousarray(inputs[name], dtype=kind) for name, kind in self._input_types.items()}
        if not self.options.io_binding:
            return self.session.run([self.output_name], feed)[0]
        binding = self.session.io_binding()  # inputs copied to the device once, output kept there until read
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.output_name, self._device_type)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _run_side_by_side(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One batch of a several-batch call, on the one-thread sibling session (opened on the first call)."""
        if self._sibling is None:
            with self._sibling_lock:
                if self._sibling is None:
                    self._sibling = OnnxRuntimeBackend(
                        self._folder, replace(self.placement, options=replace(self.options, parallel_batches=True)),
                        self._threads, self._files)
        return self._sibling.run(inputs)

    def describe(self) -> dict[str, Any]:
        """Backend, device, providers actually in use, precision and file."""
        return {"backend": "onnx", "device": self.placement.device, "dtype": self.placement.dtype,
                "providers": self.session.get_providers(), "file": self.placement.artifact.path,
                "optimized_graph": self.graph_cache,
                "inputs": list(self.input_names), "output": self.output_name}


def _input_type(node, path: Path) -> type:
    if node.name not in KNOWN_INPUTS:
        raise UnsupportedModelError(f"{path} takes input {node.name!r}; granite-rt feeds only {KNOWN_INPUTS}")
    if node.type not in _NUMPY_TYPES:
        raise UnsupportedModelError(f"{path}: input {node.name!r} is {node.type}, expected int64 or int32")
    return _NUMPY_TYPES[node.type]


def distributions(version: Callable[[str], str | None] | None = None) -> tuple[str, ...]:
    """Installed distributions that provide the ``onnxruntime`` package (``version``: a name's installed version or
    None, ``host.installed_version`` by default); one lookup per known name, far cheaper than listing every one."""
    version = version or host.installed_version
    return tuple(sorted(name for name in ORT_DISTRIBUTIONS if version(name) is not None))


def onnxruntime_conflict(dists: Sequence[str]) -> str | None:
    """A message with the fix when more than one onnxruntime distribution is installed, else None."""
    if len(dists) < 2:
        return None
    keep = next((d for d in dists if d != "onnxruntime"), dists[0])
    return (f"{len(dists)} onnxruntime distributions are installed ({', '.join(dists)}); they overwrite each "
            f"other's files and the result is unpredictable. Keep one: pip uninstall -y {' '.join(dists)} "
            f"&& pip install {keep}")


def tensorrt_missing() -> str | None:
    """Why onnxruntime's TensorRT provider cannot load (its TensorRT 10 library is not found), else None."""
    name = TENSORRT_LIBRARY.get(platform.system(), TENSORRT_LIBRARY["Linux"])
    try:
        ctypes.CDLL(name)
    except OSError as exc:
        return (f"onnxruntime lists TensorrtExecutionProvider but the TensorRT library {name} cannot be loaded "
                f"({exc}); install TensorRT 10 (pip install tensorrt) and put its libraries on the library path")
    return None
