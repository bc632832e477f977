"""OpenVINO backend: its files (``openvino/*.xml`` + ``.bin``), devices, compile options and infer requests.

INFERENCE_PRECISION_HINT is always set from the placement's dtype: left alone, OpenVINO computes
in bf16 on CPUs that support it, which silently changes the results of an "fp32" model.
OpenVINO itself is imported only when a model is compiled or its devices are asked for.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from granite_rt import host
from granite_rt.backends.base import (KNOWN_INPUTS, Artifact, BackendType, EngineInventory, PlanContext, Placement,
                                      pick_output, stored_precision)
from granite_rt.errors import DeviceUnavailableError, ModelFileError, UnsupportedModelError

# compute dtype -> INFERENCE_PRECISION_HINT (int8 keeps the INT8 IR's non-quantized ops -- FFN down-projection,
# attention, norms -- in f32; int8+bf16 computes them in bf16)
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16", "int8+bf16": "bf16"}
# OPTIMIZATION_CAPABILITIES a CPU hint needs
CPU_CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8+bf16": "BF16"}
# NPU: shapes compiled (lazily, one per bucket); inputs are padded up. No dynamic shapes there.
NPU_BUCKETS = tuple((b, s) for b in (1, 8) for s in (64, 128, 256, 512))
_DEVICE_HINTS = {"intel-gpu": "install the Intel GPU driver (compute runtime / OpenCL)",
                 "npu": "install the Intel NPU driver"}


@dataclass(frozen=True)
class OpenVINOOptions:
    """How the IR is compiled: the OpenVINO device string ("CPU", "GPU", "NPU"), compile-time properties,
    and the fixed (batch, sequence) shapes to compile where the device takes no dynamic shapes (NPU)."""

    device: str = "CPU"
    config: Mapping[str, Any] = field(default_factory=dict)
    static_shapes: tuple[tuple[int, int], ...] = ()


def bf16_cache_unsafe(device: str, dtype: str) -> bool:
    """Whether a CPU compile with the bf16 hint must not use OpenVINO's model cache: on a CPU with AMX-BF16.

    Measured 2026-12-02 on a 2-core Xeon with amx_bf16 (openvino 2026.4.1): blobs written there by long-lived
    processes (bench workers, the test suite) crashed every process that loaded them (segfault, "corrupted size
    vs. prev_size") or gave wrong vectors (MiniLM on Cranfield, nDCG@10 0.034 against 0.652; reranker logits inf),
    while every fresh compile of the same file and hint, and the reload of a blob such a compile wrote, was
    right; what made those blobs differ was not found. A fresh compile costs ~1 s per load; a wrong result is
    worse. f32-hint blobs (fp32, int8) on the same machine were right and stay cached."""
    if device != "cpu" or PRECISION_HINTS.get(dtype) != "bf16":
        return False
    return "amx_bf16" in host.cpu_flags()


def amx_bf16_streams_need_two_threads(device: str, dtype: str) -> bool:
    """Whether this compile is the fp32 IR with the bf16 hint on a CPU with AMX-BF16, where every stream needs
    at least two threads.

    Measured 2026-12-03 on a 2-core Xeon with amx_bf16 (openvino 2026.4.1, a fresh process, no model cache):
    compiling a ModernBERT fp32 IR (tiny embedder and reranker; the first sliding-window attention layer is where
    a cut graph starts to fail) with the bf16 hint kills the process with SIGFPE inside the CPU plugin whenever a
    stream gets one thread -- INFERENCE_NUM_THREADS=1, or the THROUGHPUT hint's two 1-thread streams on 2 cores --
    and succeeds with 2 or more threads per stream. The INT8 IR with the bf16 hint (int8+bf16), and every f32-hint
    compile, succeed at every thread count. A signal cannot be caught, so such a compile is not attempted."""
    return device == "CPU" and dtype == "bf16" and "amx_bf16" in host.cpu_flags()


def amx_int8_bf16_wrong() -> bool:
    """Whether OpenVINO's int8+bf16 (the INT8 IR with the bf16 hint) computes wrong vectors on this CPU: one with
    AMX-BF16.

    Measured 2026-12-03 on a 2-core Xeon with amx_bf16/amx_int8 (openvino 2026.4.1): all-MiniLM-L6-v2's INT8 IR on
    200 Cranfield documents + 30 queries against onnxruntime fp32 gave mean cosine 0.99131, 1st percentile 0.825,
    min 0.804 with the bf16 hint (the short queries worst), but 0.99838 / 0.99738 / 0.99374 with the f32 hint; with
    AMX turned off in the same process (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16) the bf16 hint gave 0.99836 / 0.99742 /
    0.99372, and on a Zen 4 (AVX-512 BF16, no AMX) 0.99861 mean. The fp32 IR with the bf16 hint stayed within
    1e-4 (0.99999 / 0.99998) on AMX. So on AMX int8+bf16 is refused, not offered."""
    return "amx_bf16" in host.cpu_flags()


class OpenVINO(BackendType):
    name = "openvino"
    engine = "openvino"
    install = "pip install 'granite-rt[openvino]'"
    devices = {"intel-gpu": "GPU", "npu": "NPU", "cpu": "CPU"}
    # fp16/bf16 are computed from the fp32 IR through INFERENCE_PRECISION_HINT.
    runnable = {("cpu", "fp32"): ("fp32",), ("cpu", "int8"): ("int8",), ("cpu", "bf16"): ("fp32",),
                ("cpu", "int8+bf16"): ("int8",),
                ("cpu", "fp16"): ("fp16", "fp32"),
                ("intel-gpu", "fp16"): ("fp16", "fp32"), ("intel-gpu", "fp32"): ("fp32",),
                ("intel-gpu", "int8"): ("int8",),
                ("npu", "fp16"): ("fp16", "fp32"), ("npu", "int8"): ("int8",)}
    file_names = {"fp32": "openvino/openvino_model.xml", "fp16": "openvino/openvino_model_fp16.xml",
                  "int8": "openvino/openvino_model_qint8_quantized.xml"}

    # ---- this machine
    def probe(self, full: bool = False) -> EngineInventory:
        """OpenVINO's devices. Not imported (0.15 s and ~40 MB of a cold start that then runs onnxruntime)
        where it can offer nothing but its CPU plugin: on Linux without GPU render or NPU device nodes;
        ``full`` asks it anyway (device names and capabilities for ``granite-rt info``)."""
        installed = host.installed_version("openvino")
        if installed and not full and not host.accelerator_nodes():  # only the CPU plugin could answer
            return EngineInventory(installed, ("CPU",), complete=False)
        try:
            import openvino as ov  # the engine, asked for its devices
        except ImportError as exc:
            return EngineInventory(error=f"import openvino failed: {exc}")
        c = ov.Core()
        devices = tuple(c.available_devices)
        names = {d: str(_property(c, d, "FULL_DEVICE_NAME") or d) for d in devices}
        caps = {d: tuple(str(x) for x in (_property(c, d, "OPTIMIZATION_CAPABILITIES") or ())) for d in devices}
        return EngineInventory(ov.__version__.split("-")[0], devices, names, caps)

    def absent_reason(self, engine: EngineInventory, device: str) -> str:
        if engine.version is None:
            return super().absent_reason(engine, device)
        hint = _DEVICE_HINTS.get(device, "")
        return (f"openvino {engine.version} sees devices {list(engine.devices)}, not {self.devices.get(device, device)}"
                + (f"; {hint}" if hint else ""))

    def unsupported_dtype(self, engine: EngineInventory, device: str, dtype: str) -> str | None:
        """bf16 / fp16 on the CPU plugin need the CPU's support (OPTIMIZATION_CAPABILITIES); int8+bf16 is wrong on
        AMX (``amx_int8_bf16_wrong``)."""
        if device != "cpu" or dtype not in CPU_CAPABILITY:
            return None
        if dtype == "int8+bf16" and amx_int8_bf16_wrong():
            return ("dtype='int8+bf16' on the OpenVINO CPU gives wrong vectors on CPUs with AMX-BF16 (OpenVINO's AMX "
                    "kernels; measured min cosine 0.80 to fp32, against 0.994 with the f32 hint); use 'int8' or 'bf16'")
        if engine.complete or engine.version is None:
            capabilities = tuple(engine.capabilities.get("CPU", ()))
        else:  # probe() left OpenVINO unimported: ask now, only because this dtype depends on it
            import openvino as ov

            capabilities = tuple(str(c) for c in (_property(ov.Core(), "CPU", "OPTIMIZATION_CAPABILITIES") or ()))
        if CPU_CAPABILITY[dtype] in capabilities:
            return None
        return (f"dtype={dtype!r} on the OpenVINO CPU needs a CPU with {CPU_CAPABILITY[dtype]} support; "
                f"this one reports {list(capabilities)}")

    def engine_line(self, engine: EngineInventory) -> str:
        if engine.version is None:
            return f"openvino: not installed ({engine.error or ''}); {self.install}"
        devices = "; ".join(f"{d} = {engine.names.get(d, d)} [{' '.join(engine.capabilities.get(d, ()))}]"
                            for d in engine.devices)
        return f"openvino {engine.version}: {devices or 'no devices'}"

    # ---- model files
    def precision_of(self, filename: str):
        return stored_precision(filename) if filename.endswith(".xml") else None

    def discover(self, folder: Path) -> list[Artifact]:
        found = [Artifact(p.relative_to(folder).as_posix(), self.name, stored_precision(p.name))
                 for p in sorted((folder / "openvino").glob("*.xml"))]
        return sorted(found, key=self.rank)

    def hub_patterns(self, precision: str) -> tuple[str, ...]:
        xml = self.file_names.get(precision)
        return (xml, xml[:-4] + ".bin") if xml else ()

    def files(self, folder: Path, artifact: Artifact) -> list[Path]:
        """The IR's .xml and its weights .bin."""
        main = folder / artifact.path
        return [main, main.with_suffix(".bin")]

    def check_files(self, files: Sequence[Path]) -> None:
        """The IR's constants must lie inside the .bin (a truncated .bin crashes OpenVINO later)."""
        xml, weights = files[0], files[1]
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise ModelFileError(f"{xml} is not a valid OpenVINO IR ({exc}); re-export or re-download it") from exc
        end = 0
        for data in root.iter("data"):
            if "offset" in data.attrib and "size" in data.attrib:
                end = max(end, int(data.attrib["offset"]) + int(data.attrib["size"]))
        size = weights.stat().st_size
        if size < end:
            raise ModelFileError(f"{weights} is truncated: {size} bytes, the IR {xml.name} needs {end}")

    # ---- planning and opening
    def options(self, device: str, dtype: str, artifact: Artifact, ctx: PlanContext) -> OpenVINOOptions:
        config: dict[str, Any] = {"PERFORMANCE_HINT": ctx.workload.upper(),
                                  "INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype]}
        if ctx.cache_dir is not None and ctx.cache_key is not None and not bf16_cache_unsafe(device, dtype):
            # compiling takes seconds (1.1 s for the 97m INT8 IR on 2 cores; cached 0.25 s)
            config["CACHE_DIR"] = str(ctx.cache_dir / "openvino" / ctx.cache_key)
        return OpenVINOOptions(self.devices[device], config, NPU_BUCKETS if device == "npu" else ())

    def open(self, folder: Path, placement: Placement, threads: int) -> "OpenVINOBackend":
        return OpenVINOBackend(folder, placement, threads)


OPENVINO = OpenVINO()

_core = None
_core_lock = threading.Lock()


def core():
    """The process-wide OpenVINO Core (creating one is slow and they share plugins)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov  # the engine: imported when first needed, not with granite_rt

            _core = ov.Core()
        return _core


# INT8 rows are padded only to their own length rounded up to this (batching.py): padding a row further
# changes its fp32 attention sums by ~1e-7, which moves a few INT8 activations across a rounding step
# (all-MiniLM-L6-v2, 400 texts of 1-200 words alone vs one call: min cosine 0.99987, max |Δ| 2.4e-3 before,
# bitwise equal after). Widths rounded to 16 cost nothing measurable there (one call 25.1 s vs 26.1 s, load 15).
INT8_PAD_MULTIPLE = 16


class OpenVINOBackend:
    """A compiled OpenVINO IR on the placement's device (CPU when it names none)."""

    def __init__(self, folder: Path, placement: Placement, threads: int) -> None:
        self.placement = placement
        options: OpenVINOOptions = placement.options or OpenVINOOptions()
        self.path = folder / placement.artifact.path
        self.device = options.device
        self.config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[placement.dtype], **options.config}
        if self.device == "CPU":
            self.config.setdefault("INFERENCE_NUM_THREADS", threads)
        if amx_bf16_streams_need_two_threads(self.device, placement.dtype):
            self._give_each_stream_two_threads()
        if "CACHE_DIR" in self.config and not host.writable_dir(Path(self.config["CACHE_DIR"])):
            del self.config["CACHE_DIR"]  # a cache only saves time: an unwritable one must not stop loading
        # NPU: no dynamic shapes. One model per (batch, sequence) bucket, compiled on first use; the
        # smallest is compiled now so a device that cannot take the model fails at load (and falls back).
        self._buckets = tuple(sorted(options.static_shapes))
        self._by_shape: dict[tuple[int, int], Any] = {}
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
        self.pad_to_multiple_of = INT8_PAD_MULTIPLE if placement.dtype.startswith("int8") and not self._buckets else 0

    def _give_each_stream_two_threads(self) -> None:
        """THROUGHPUT gets one stream per two threads; one thread in all cannot be compiled (see
        ``amx_bf16_streams_need_two_threads``) and is refused, so that another placement can be tried."""
        threads = int(self.config["INFERENCE_NUM_THREADS"])
        if threads < 2:
            raise DeviceUnavailableError(
                f"dtype='bf16' on the OpenVINO CPU with {threads} thread cannot be compiled on this AMX-BF16 CPU "
                f"(openvino crashes the process); use threads >= 2, or dtype 'int8' or 'fp32'")
        if self.config.get("PERFORMANCE_HINT") == "THROUGHPUT":
            self.config.setdefault("NUM_STREAMS", threads // 2)

    def _read(self):
        try:
            return core().read_model(str(self.path), str(self.path.with_suffix(".bin")))
        except Exception as exc:  # noqa: BLE001 - any failure to read the IR is a file problem
            raise ModelFileError(f"{self.path} cannot be read by OpenVINO (truncated or corrupted? "
                                 f"re-export or re-download it): {exc}") from exc

    def _compile(self, model):
        try:
            return core().compile_model(model, self.device, {k: _ov_value(v) for k, v in self.config.items()})
        except Exception as exc:  # noqa: BLE001 - a file problem, else a device/plugin failure (may fall back)
            if isinstance(model, str):
                self._read()  # raises ModelFileError when the IR itself is unreadable
            raise DeviceUnavailableError(f"OpenVINO could not compile {self.path} for {self.device} "
                                         f"with {self.config}: {exc}") from exc

    def _compiled_for(self, batch: int, sequence: int):
        """The model compiled for the static shape [batch, sequence] (once per process)."""
        import openvino as ov  # already imported by core(); named here for PartialShape

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

    def _infer(self, compiled, feed: Mapping[str, np.ndarray]) -> np.ndarray:
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


def _property(c: Any, device: str, name: str) -> Any:
    try:
        return c.get_property(device, name)
    except Exception:  # a plugin that does not report this property
        return None


def _ov_value(value: Any) -> Any:
    """Config values as OpenVINO's Python API takes them (strings for enums and numbers)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
