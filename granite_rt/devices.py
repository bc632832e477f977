"""Where a model runs: plan placements over what is installed, open with fallback, report it.

``select_placements`` turns (backend, device, dtype) into an ordered list of concrete
``Placement``s over the artifacts a model folder holds and the devices present here;
``open_with_fallback`` opens the first that works, warns once about the ones that did not and
returns a ``Selection`` for ``info``. Backends are probed lazily through ``probe()`` (the seam the
tests replace), so importing this module imports neither onnxruntime nor openvino.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from granite_rt.backends.base import Artifact, Backend, Placement
from granite_rt.errors import BackendUnavailableError, DeviceUnavailableError, GraniteRTError, ModelFileError

DEVICES = ("cpu", "cuda", "tensorrt", "directml", "intel-gpu", "npu")
BACKENDS = ("auto", "onnx", "openvino")
DTYPES = ("auto", "fp32", "fp16", "bf16", "int8")
WORKLOADS = ("latency", "throughput")

# device="auto" walks this order; the NPU is left out on purpose (static shapes cap the sequence
# length below the model's, see docs/devices.md) and is used only when asked for by name.
AUTO_ORDER = ("tensorrt", "cuda", "directml", "intel-gpu", "cpu")

# onnxruntime execution providers and OpenVINO device strings behind each user-facing device.
ORT_PROVIDER = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                "directml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider"}
OV_DEVICE = {"intel-gpu": "GPU", "npu": "NPU", "cpu": "CPU"}
PROVIDER_DEVICE = {provider: device for device, provider in ORT_PROVIDER.items()}

# dtype="auto": compute precisions tried in order per device (first with a runnable artifact wins).
# On a CPU without int8 dot-product instructions OpenVINO tries fp32 first (see INT8_DOT_FLAGS).
AUTO_DTYPES = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16", "fp32"),
               "directml": ("fp16", "fp32"), "intel-gpu": ("fp16", "fp32", "int8"), "npu": ("fp16", "int8")}

# (backend, device, compute dtype) -> stored artifact precisions that can run it, best first.
# TensorRT builds its own fp16 engine from the fp32 graph (trt_fp16_enable); OpenVINO computes
# fp16/bf16 from the fp32 IR through INFERENCE_PRECISION_HINT. Absent combinations are unsupported.
RUNNABLE = {
    ("onnx", "cpu", "fp32"): ("fp32",), ("onnx", "cpu", "int8"): ("int8",), ("onnx", "cpu", "fp16"): ("fp16",),
    ("onnx", "cuda", "fp32"): ("fp32",), ("onnx", "cuda", "fp16"): ("fp16",),
    ("onnx", "tensorrt", "fp32"): ("fp32",), ("onnx", "tensorrt", "fp16"): ("fp32", "fp16"),
    ("onnx", "directml", "fp32"): ("fp32",), ("onnx", "directml", "fp16"): ("fp16",),
    ("openvino", "cpu", "fp32"): ("fp32",), ("openvino", "cpu", "int8"): ("int8",),
    ("openvino", "cpu", "bf16"): ("fp32",), ("openvino", "cpu", "fp16"): ("fp16", "fp32"),
    ("openvino", "intel-gpu", "fp16"): ("fp16", "fp32"), ("openvino", "intel-gpu", "fp32"): ("fp32",),
    ("openvino", "intel-gpu", "int8"): ("int8",),
    ("openvino", "npu", "fp16"): ("fp16", "fp32"), ("openvino", "npu", "int8"): ("int8",),
}
OV_PRECISION_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
OV_CPU_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}   # OPTIMIZATION_CAPABILITIES a CPU hint needs

# CPU extensions with int8 dot products (x86 VNNI/AMX, Arm dotprod), as /proc/cpuinfo names them. With one,
# OpenVINO's INT8 is the fastest CPU path (1.6x its fp32 on an AVX512-VNNI Xeon, 97m shape). Without one (an AVX2-only
# AMD EPYC, docs/devices.md) OpenVINO's INT8 ran slower than its fp32 and onnxruntime's INT8 was the fastest
# path, so the CPU then tries onnxruntime first, and OpenVINO fp32 before its INT8.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
_NUMPY_INT8_DOT = {"AVX512VNNI": "avx512_vnni", "ASIMDDP": "asimddp"}   # numpy's runtime CPU feature names
NO_INT8_DOT = " (this CPU has no int8 dot-product instructions: VNNI, AMX or Arm dotprod)"

# NPU: shapes compiled (lazily, one per bucket) by the OpenVINO backend; inputs are padded up.
NPU_BUCKETS = tuple((b, s) for b in (1, 8) for s in (64, 128, 256, 512))

# Python distributions that each ship the `onnxruntime` import package (installing two breaks it).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-cann",
                     "onnxruntime-silicon", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu",
                     "ort-nightly-directml")


class DeviceFallbackWarning(UserWarning):
    """A planned device could not be used and the model runs on a later candidate."""


class NotRecommendedWarning(UserWarning):
    """The artifact that runs is marked not recommended (INT8 gate missed, dynamic INT8); dtype="auto" skips it."""


class OnnxRuntimeConflictWarning(UserWarning):
    """More than one onnxruntime distribution is installed; they overwrite each other's files."""


@dataclass(frozen=True)
class Inventory:
    """What this machine offers: backend versions, onnxruntime providers, OpenVINO devices."""

    ort_version: str | None = None
    ort_providers: tuple[str, ...] = ()
    ort_distributions: tuple[str, ...] = ()
    ov_version: str | None = None
    ov_devices: tuple[str, ...] = ()                                      # "CPU", "GPU.0", "NPU", ...
    ov_names: Mapping[str, str] = field(default_factory=dict)            # device -> FULL_DEVICE_NAME
    ov_capabilities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)              # backend -> why it is unusable
    cpu_int8_dot: tuple[str, ...] | None = None                          # INT8_DOT_FLAGS present; None: unknown
    ov_asked: bool = True       # False: OpenVINO not imported yet (it can offer only its CPU here, see probe)

    def has_ov(self, ov_device: str) -> bool:
        return any(d == ov_device or d.startswith(ov_device + ".") for d in self.ov_devices)

    def present(self, backend: str, device: str) -> bool:
        """Whether ``device`` is reachable through ``backend`` here."""
        if backend == "onnx":
            return ORT_PROVIDER.get(device, "") in self.ort_providers
        return device in OV_DEVICE and self.has_ov(OV_DEVICE[device])

    def ov_cpu_capabilities(self) -> tuple[str, ...]:
        """OpenVINO's OPTIMIZATION_CAPABILITIES for the CPU (asked now if probe() did not import OpenVINO)."""
        if self.ov_asked or self.ov_version is None:
            return tuple(self.ov_capabilities.get("CPU", ()))
        import openvino as ov

        return tuple(str(c) for c in (_ov_property(ov.Core(), "CPU", "OPTIMIZATION_CAPABILITIES") or ()))

    def absent_reason(self, backend: str, device: str) -> str:
        """Why ``device`` is not reachable through ``backend`` (with the fix)."""
        if backend == "onnx":
            if self.ort_version is None:
                return f"onnxruntime is not installed ({self.errors.get('onnx', 'pip install onnxruntime')})"
            if device in self.errors:
                return self.errors[device]
            hint = {"cuda": "install onnxruntime-gpu (instead of onnxruntime) and the CUDA / cuDNN libraries it was built for",
                    "tensorrt": "install onnxruntime-gpu and TensorRT (libnvinfer) next to CUDA",
                    "directml": "install onnxruntime-directml (Windows) instead of onnxruntime"}.get(device, "")
            return (f"onnxruntime {self.ort_version} offers {list(self.ort_providers)}, not "
                    f"{ORT_PROVIDER.get(device, device)}" + (f"; {hint}" if hint else ""))
        if self.ov_version is None:
            return f"openvino is not installed ({self.errors.get('openvino', 'pip install granite-rt[openvino]')})"
        hint = {"intel-gpu": "install the Intel GPU driver (compute runtime / OpenCL)",
                "npu": "install the Intel NPU driver"}.get(device, "")
        return (f"openvino {self.ov_version} sees devices {list(self.ov_devices)}, not {OV_DEVICE.get(device, device)}"
                + (f"; {hint}" if hint else ""))


def onnxruntime_distributions(version: Callable[[str], str] | None = None) -> tuple[str, ...]:
    """Installed distributions that provide the ``onnxruntime`` package (``version`` is importlib.metadata's)."""
    from importlib.metadata import PackageNotFoundError

    if version is None:
        from importlib.metadata import version
    found = []
    for name in ORT_DISTRIBUTIONS:  # one lookup per known name: far cheaper than listing every distribution
        try:
            version(name)
        except PackageNotFoundError:
            continue
        found.append(name)
    return tuple(sorted(found))


def onnxruntime_conflict(dists: Sequence[str]) -> str | None:
    """A message with the fix when more than one onnxruntime distribution is installed, else None."""
    if len(dists) < 2:
        return None
    keep = next((d for d in dists if d != "onnxruntime"), dists[0])
    return (f"{len(dists)} onnxruntime distributions are installed ({', '.join(dists)}); they overwrite each "
            f"other's files and the result is unpredictable. Keep one: pip uninstall -y {' '.join(dists)} "
            f"&& pip install {keep}")


def probe(full: bool = False) -> Inventory:
    """Ask the installed backends what they offer (imports onnxruntime and openvino if present).

    OpenVINO is not imported (0.15 s and ~40 MB of a cold start that then runs onnxruntime) where it can
    offer nothing but its CPU plugin: on Linux without GPU render or accelerator (NPU) device nodes.
    ``full`` asks it anyway (device names and capabilities for ``granite-rt info``).
    """
    ort_version, providers, errors = None, (), {}
    dists = onnxruntime_distributions()
    if dists == ("onnxruntime",):  # the CPU build: known without importing it (26 MB, when OpenVINO is chosen)
        ort_version, providers = _installed_version("onnxruntime"), ("CPUExecutionProvider",)
    else:
        try:
            import onnxruntime as ort
            ort_version, providers = ort.__version__, tuple(ort.get_available_providers())
        except ImportError as exc:  # absent or broken: the reason goes into info
            errors["onnx"] = f"import onnxruntime failed: {exc}"
    if "TensorrtExecutionProvider" in providers:  # listed by every onnxruntime-gpu, usable only with TensorRT
        missing = _tensorrt_missing()
        if missing:
            providers = tuple(p for p in providers if p != "TensorrtExecutionProvider")
            errors["tensorrt"] = missing
    ov_version, ov_devices, names, caps = None, (), {}, {}
    ov_installed = _installed_version("openvino")
    if ov_installed and not full and not accelerator_nodes():  # only the CPU plugin could answer
        return Inventory(ort_version, providers, dists, ov_installed, ("CPU",),
                         errors=errors, cpu_int8_dot=cpu_int8_dot(), ov_asked=False)
    try:
        import openvino as ov
        core = ov.Core()
        ov_version, ov_devices = ov.__version__.split("-")[0], tuple(core.available_devices)
        for dev in ov_devices:
            names[dev] = str(_ov_property(core, dev, "FULL_DEVICE_NAME") or dev)
            caps[dev] = tuple(str(c) for c in (_ov_property(core, dev, "OPTIMIZATION_CAPABILITIES") or ()))
    except ImportError as exc:
        errors["openvino"] = f"import openvino failed: {exc}"
    return Inventory(ort_version, providers, dists, ov_version, ov_devices,
                     names, caps, errors, cpu_int8_dot())


def accelerator_nodes(dev: Path = Path("/dev")) -> bool:
    """Whether a GPU or NPU OpenVINO could use may be present: Linux render / accel device nodes; True elsewhere."""
    if platform.system() != "Linux":
        return True
    return any(dev.glob("dri/renderD*")) or any(dev.glob("accel/accel*"))


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def cpu_int8_dot(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """This CPU's int8 dot-product extensions: numpy's runtime feature table, plus /proc/cpuinfo flags on Linux."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    found = {name for key, name in _NUMPY_INT8_DOT.items() if features.get(key)}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    found |= set(line.partition(":")[2].split()) & set(INT8_DOT_FLAGS)
                    break
    except OSError:
        pass
    return tuple(sorted(found))


TENSORRT_LIBRARY = {"Windows": "nvinfer_10.dll", "Linux": "libnvinfer.so.10"}


def _tensorrt_missing() -> str | None:
    """Why onnxruntime's TensorRT provider cannot load (its TensorRT 10 library is not found), else None."""
    import ctypes

    name = TENSORRT_LIBRARY.get(platform.system(), TENSORRT_LIBRARY["Linux"])
    try:
        ctypes.CDLL(name)
    except OSError as exc:
        return (f"onnxruntime lists TensorrtExecutionProvider but the TensorRT library {name} cannot be loaded "
                f"({exc}); install TensorRT 10 (pip install tensorrt) and put its libraries on the library path")
    return None


def _ov_property(core: Any, device: str, name: str) -> Any:
    try:
        return core.get_property(device, name)
    except Exception:  # a plugin that does not report this property
        return None


CACHE_OFF = ("off", "none", "0")


def default_cache_dir() -> Path | None:
    """Where TensorRT engines and compiled OpenVINO models are cached: $GRANITE_RT_CACHE or the user cache.

    ``GRANITE_RT_CACHE=off`` turns every on-disk cache off (None).
    """
    setting = os.environ.get("GRANITE_RT_CACHE", "")
    if setting.lower() in CACHE_OFF:
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "granite-rt"


@dataclass(frozen=True)
class ShapeLimits:
    """Largest (batch, sequence) the caller will run; bounds TensorRT optimisation profiles."""

    batch: int
    sequence: int
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class DeviceInfo:
    """One device reachable through one backend here."""

    name: str            # cpu, cuda, tensorrt, directml, intel-gpu, npu
    backend: str         # onnx | openvino
    provider: str        # onnxruntime execution provider or OpenVINO device string
    description: str = ""


def available_devices(inventory: Inventory | None = None) -> list[DeviceInfo]:
    """Devices usable here, in the order ``device="auto"`` prefers them (NPU last: only on request)."""
    inv = inventory or probe()
    out = []
    for device in DEVICES_BY_PREFERENCE:
        for backend in _backends_for(device, "auto", inv):
            if inv.present(backend, device):
                provider = ORT_PROVIDER[device] if backend == "onnx" else OV_DEVICE[device]
                desc = (f"onnxruntime {inv.ort_version}" if backend == "onnx" else
                        "; ".join(inv.ov_names.get(d, d) for d in inv.ov_devices
                                  if d == provider or d.startswith(provider + ".")))
                out.append(DeviceInfo(device, backend, provider, desc))
    return out


def _backends_for(device: str, backend: str, inv: Inventory | None = None) -> tuple[str, ...]:
    """Backends that can drive ``device``, preferred first: on CPU the one with the faster INT8 (INT8_DOT_FLAGS)."""
    options = {"cpu": ("openvino", "onnx"), "intel-gpu": ("openvino",), "npu": ("openvino",)}.get(device, ("onnx",))
    if device == "cpu" and inv is not None and inv.cpu_int8_dot == ():
        options = ("onnx", "openvino")
    return options if backend == "auto" else tuple(b for b in options if b == backend)


def select_placements(artifacts: Sequence[Artifact] | Any, backend: str = "auto", device: str | list = "auto",
                      dtype: str = "auto", *, allow_fallback: bool | None = None, cache_dir: Path | None = None,
                      folder: Path | None = None, workload: str = "latency", shapes: ShapeLimits | None = None,
                      inventory: Inventory | None = None) -> list[Placement]:
    """Ordered candidates for (backend, device, dtype) over ``artifacts`` and the devices present here.

    ``device`` is a name from DEVICES, "auto", or a raw onnxruntime provider list (names or
    ``(name, options)`` tuples). An explicit device that cannot be used raises
    DeviceUnavailableError unless ``allow_fallback``; then the auto order follows it.
    """
    artifacts = getattr(artifacts, "artifacts", artifacts)  # a ModelSpec is accepted too
    _check_choice("backend", backend, BACKENDS)
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("workload", workload, WORKLOADS)
    inv = inventory or probe()
    ctx = _Context(inv, cache_dir if cache_dir is not None else default_cache_dir(), folder, workload, shapes)
    if not isinstance(device, str):
        return _warn_conflict(inv, [_raw_placement(artifacts, backend, list(device), dtype, ctx)])
    _check_choice("device", device, ("auto",) + DEVICES)
    _check_backend_installed(backend, inv)
    if device == "auto":
        placements = _plan(artifacts, backend, AUTO_ORDER, dtype, ctx, skip_absent=True)
        if not placements:
            raise DeviceUnavailableError(_nothing_runs(artifacts, backend, dtype, inv))
        return _warn_conflict(inv, placements)
    if not _backends_for(device, backend):
        raise ValueError(f"device={device!r} does not run on backend={backend!r}; it runs on "
                         f"{' or '.join(_backends_for(device, 'auto'))} (use backend='auto')")
    fallback = device != "cpu" and bool(allow_fallback)
    placements = _plan(artifacts, backend, (device,), dtype, ctx, skip_absent=False)
    if not fallback:
        absent = [p for p in placements if not inv.present(p.backend, p.device)]
        if len(absent) == len(placements):
            raise DeviceUnavailableError(f"device={device!r} cannot be used here: "
                                         f"{inv.absent_reason(absent[0].backend, device)} "
                                         "(or pass allow_fallback=True to run on the next device instead)")
        return _warn_conflict(inv, [p for p in placements if p not in absent])
    rest = [p for p in _plan(artifacts, backend, AUTO_ORDER, dtype, ctx, skip_absent=True) if p not in placements]
    return _warn_conflict(inv, placements + rest)


def _warn_conflict(inv: Inventory, placements: list[Placement]) -> list[Placement]:
    """Warn (OnnxRuntimeConflictWarning) when onnxruntime will run but two distributions of it are installed."""
    message = onnxruntime_conflict(inv.ort_distributions)
    if message and any(p.backend == "onnx" for p in placements):
        warnings.warn(message, OnnxRuntimeConflictWarning, stacklevel=3)
    return placements


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _check_backend_installed(backend: str, inv: Inventory) -> None:
    if backend == "onnx" and inv.ort_version is None:
        raise BackendUnavailableError(f"backend='onnx' needs onnxruntime: {inv.errors.get('onnx', '')}; "
                                      "pip install onnxruntime (or onnxruntime-gpu)")
    if backend == "openvino" and inv.ov_version is None:
        raise BackendUnavailableError(f"backend='openvino' needs openvino: {inv.errors.get('openvino', '')}; "
                                      "pip install 'granite-rt[openvino]'")


@dataclass(frozen=True)
class _Context:
    inv: Inventory
    cache_dir: Path | None
    folder: Path | None
    workload: str
    shapes: ShapeLimits | None


def _plan(artifacts: Sequence[Artifact], backend: str, devices: Sequence[str], dtype: str, ctx: _Context,
          *, skip_absent: bool) -> list[Placement]:
    """One placement per (device, backend) in order that has a runnable artifact at ``dtype``."""
    out = []
    for device in devices:
        here = []
        for be in _backends_for(device, backend, ctx.inv):
            if skip_absent and not ctx.inv.present(be, device):
                continue
            chosen = _choose_dtype(artifacts, be, device, dtype, ctx.inv, explicit=not skip_absent)
            if chosen is not None:
                dt, artifact, why = chosen
                if backend == "auto" and device == "cpu" and be == "onnx" and ctx.inv.cpu_int8_dot == ():
                    why += "; onnxruntime before OpenVINO" + NO_INT8_DOT
                here.append(_placement(be, device, dt, artifact, why, ctx))
        out += _prefer_recommended(here, artifacts, device, dtype)
    if not out and not skip_absent:
        raise _no_artifact(artifacts, backend, devices[0], dtype)
    return out


def _prefer_recommended(placements: list[Placement], artifacts: Sequence[Artifact], device: str,
                        dtype: str) -> list[Placement]:
    """dtype="auto" where an artifact was skipped as not recommended: a backend that still runs the preferred
    precision goes first (a gated INT8 on onnxruntime before OpenVINO fp32 when OpenVINO's INT8 failed)."""
    if dtype != "auto" or len(placements) < 2 or not any(a.not_recommended for a in artifacts):
        return placements
    order = AUTO_DTYPES.get(device, ())
    ranked = sorted(placements, key=lambda p: order.index(p.dtype) if p.dtype in order else len(order))
    if ranked[0] is not placements[0]:
        ranked[0] = replace(ranked[0], why=f"{ranked[0].why}; before {placements[0].backend}, whose "
                                           f"{placements[0].why}")
    return ranked


def _choose_dtype(artifacts: Sequence[Artifact], backend: str, device: str, dtype: str, inv: Inventory,
                  *, explicit: bool) -> tuple[str, Artifact, str] | None:
    """(compute dtype, artifact, why) for ``device`` on ``backend``, or None when none is runnable."""
    wanted = AUTO_DTYPES[device] if dtype == "auto" else (dtype,)
    slow_int8 = backend == "openvino" and device == "cpu" and dtype == "auto" and inv.cpu_int8_dot == ()
    if slow_int8:
        wanted = ("fp32", "int8")
    skipped: list[str] = []  # artifacts dtype="auto" passed over (not recommended), for why
    for i, dt in enumerate(wanted):
        if backend == "openvino" and device == "cpu" and dt in OV_CPU_CAPABILITY:
            capabilities = inv.ov_cpu_capabilities()
            if OV_CPU_CAPABILITY[dt] not in capabilities:
                if dtype != "auto" and explicit:
                    raise DeviceUnavailableError(f"dtype={dt!r} on the OpenVINO CPU needs a CPU with "
                                                 f"{OV_CPU_CAPABILITY[dt]} support; this one reports "
                                                 f"{list(capabilities)}")
                continue
        precisions = RUNNABLE.get((backend, device, dt), ())
        artifact = _pick_artifact(artifacts, backend, precisions, recommended_only=dtype == "auto")
        if artifact is None:
            unrecommended = _pick_artifact(artifacts, backend, precisions) if dtype == "auto" else None
            if unrecommended is not None:
                skipped.append(f"{unrecommended.path} skipped: {unrecommended.not_recommended}")
            continue
        if dtype != "auto":
            why = f"dtype={dt} as asked"
            if artifact.not_recommended:
                why += f" (NOT recommended: {artifact.not_recommended})"
        elif i == 0:
            why = f"{dt} is the preferred precision on {device}"
            if slow_int8:
                why += " for OpenVINO" + NO_INT8_DOT
        elif skipped:
            why = f"{'; '.join(skipped)}; so {dt}"
        else:
            why = f"no {'/'.join(wanted[:i])} artifact for {backend}, so {dt}"
        if artifact.precision != dt:
            why += f" (computed from the {artifact.precision} artifact)"
        return dt, artifact, why
    return None


def _pick_artifact(artifacts: Sequence[Artifact], backend: str, precisions: Sequence[str],
                   recommended_only: bool = False) -> Artifact | None:
    """The first artifact of ``backend`` stored at the first of ``precisions`` present (``recommended_only``:
    passing over those marked not recommended).

    ``artifacts`` come best first (ModelSpec ranks canonical names before IBM's ISA variants).
    """
    for precision in precisions:
        for artifact in artifacts:
            if (artifact.backend == backend and artifact.precision == precision
                    and not (recommended_only and artifact.not_recommended)):
                return artifact
    return None


def _placement(backend: str, device: str, dtype: str, artifact: Artifact, why: str, ctx: _Context) -> Placement:
    """The device-specific settings for one candidate (documented in docs/devices.md)."""
    if backend == "openvino":
        config: dict[str, Any] = {"PERFORMANCE_HINT": ctx.workload.upper(),
                                  "INFERENCE_PRECISION_HINT": OV_PRECISION_HINT[dtype]}
        if ctx.cache_dir is not None:  # compiling takes seconds (1.1 s for the 97m INT8 IR on 2 cores; cached 0.25 s)
            config["CACHE_DIR"] = str(ctx.cache_dir / "openvino" / _artifact_key(artifact, ctx.folder))
        return Placement(backend="openvino", device=device, dtype=dtype, artifact=artifact,
                         ov_device=OV_DEVICE[device], ov_config=config,
                         static_shapes=NPU_BUCKETS if device == "npu" else (), why=why)
    cuda = ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"})
    if device == "tensorrt":
        trt: dict[str, Any] = {"device_id": 0, "trt_fp16_enable": dtype == "fp16"}
        if ctx.cache_dir is not None:
            engines = str(ctx.cache_dir / "tensorrt" / _artifact_key(artifact, ctx.folder))
            trt.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": engines,
                        "trt_timing_cache_enable": True, "trt_timing_cache_path": engines})
        if ctx.shapes is not None:
            trt.update(_trt_profiles(ctx.shapes))
        providers: tuple = (("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider")
    elif device == "cuda":
        providers = (cuda, "CPUExecutionProvider")
    elif device == "directml":
        providers = (("DmlExecutionProvider", {"device_id": 0}), "CPUExecutionProvider")
    else:
        providers = ("CPUExecutionProvider",)
    session = {"enable_mem_pattern": False, "execution_mode": "ORT_SEQUENTIAL"} if device == "directml" else {}
    return Placement(backend="onnx", device=device, dtype=dtype, artifact=artifact, providers=providers,
                     session_options=session, io_binding=device in ("cuda", "tensorrt"), why=why)


def _artifact_key(artifact: Artifact, folder: Path | None) -> str:
    """A cache key per model file: its manifest sha256s, else its resolved path with its files' sizes and mtimes.

    A replaced file (even an IR's .bin alone, which OpenVINO's own cache check misses) gets a new key.
    """
    if artifact.sha256:
        return hashlib.sha256("".join([artifact.sha256, *(d for _, d in artifact.files)]).encode()).hexdigest()[:16]
    if folder is None:
        return hashlib.sha256(artifact.path.encode()).hexdigest()[:16]
    main = folder / artifact.path
    parts = [str(main.resolve())]
    for path in (main, main.with_suffix(".bin")) if artifact.backend == "openvino" else (main,):
        if path.exists():
            stat = path.stat()
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _trt_profiles(shapes: ShapeLimits) -> dict[str, str]:
    """TensorRT optimisation profile covering 1x1 .. batch x sequence, so no engine rebuild per shape."""
    def spec(b: int, s: int) -> str:
        return ",".join(f"{name}:{b}x{s}" for name in shapes.inputs)
    return {"trt_profile_min_shapes": spec(1, 1), "trt_profile_opt_shapes": spec(shapes.batch, min(shapes.sequence, 256)),
            "trt_profile_max_shapes": spec(shapes.batch, shapes.sequence)}


def _raw_placement(artifacts: Sequence[Artifact], backend: str, providers: list, dtype: str, ctx: _Context) -> Placement:
    """A user-given onnxruntime provider list: validated, used as is, device named after its first entry."""
    if backend == "openvino":
        raise ValueError("a provider list is for backend='onnx'; OpenVINO takes device='cpu'|'intel-gpu'|'npu'")
    if not providers:
        raise ValueError("device=[] is an empty provider list; name at least one onnxruntime execution provider")
    names = []
    for item in providers:
        if isinstance(item, str):
            names.append(item)
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], Mapping)):
            names.append(item[0])
        else:
            raise TypeError(f"provider list item {item!r} is neither a provider name nor a (name, options) tuple")
    _check_backend_installed("onnx", ctx.inv)
    missing = [n for n in names if n not in ctx.inv.ort_providers]
    if missing:
        raise DeviceUnavailableError(f"providers {missing} are not available in onnxruntime {ctx.inv.ort_version}, "
                                     f"which offers {list(ctx.inv.ort_providers)}")
    device = PROVIDER_DEVICE.get(names[0], names[0].removesuffix("ExecutionProvider").lower())
    chosen = _choose_dtype(artifacts, "onnx", device if device in AUTO_DTYPES else "cpu", dtype, ctx.inv,
                           explicit=True)
    if chosen is None and dtype in ("auto", "fp32"):
        artifact = _pick_artifact(artifacts, "onnx", ("fp32",))
        chosen = ("fp32", artifact, "fp32 for a custom provider list") if artifact else None
    if chosen is None:
        raise _no_artifact(artifacts, "onnx", device, dtype)
    dt, artifact, why = chosen
    return Placement(backend="onnx", device=device, dtype=dt, artifact=artifact,
                     providers=tuple(tuple(p) if isinstance(p, tuple) else p for p in providers),
                     io_binding=device in ("cuda", "tensorrt"), why=f"provider list as given; {why}")


def _no_artifact(artifacts: Sequence[Artifact], backend: str, device: str, dtype: str) -> Exception:
    have = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in artifacts) or "none"
    runs = sorted({dt for (be, dev, dt) in RUNNABLE if dev == device and backend in ("auto", be)})
    if dtype != "auto" and dtype not in runs:
        return ValueError(f"dtype={dtype!r} is not supported on device {device!r}"
                          + (f" with backend={backend!r}" if backend != "auto" else "") + f"; it runs {runs}")
    return ModelFileError(f"no model file runs on {device!r} at dtype={dtype!r} with backend={backend!r}; "
                          f"the folder has: {have}")


def _nothing_runs(artifacts: Sequence[Artifact], backend: str, dtype: str, inv: Inventory) -> str:
    have = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in artifacts) or "no model files"
    reachable = [d.name + "/" + d.backend for d in available_devices(inv)] or ["none"]
    return (f"no device here can run this model with backend={backend!r}, dtype={dtype!r}: devices "
            f"{', '.join(reachable)}; model files: {have}")


@dataclass(frozen=True)
class Attempt:
    """A candidate that could not be opened, and why."""

    placement: Placement
    error: str


@dataclass(frozen=True)
class Selection:
    """The placement that runs, the ones tried before it, and the backend's own description."""

    placement: Placement
    failed: tuple[Attempt, ...] = ()
    described: Mapping[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """Flat description for ``Embedder.info``: backend, device, dtype, file, why, fallbacks."""
        p = self.placement
        out: dict[str, Any] = {"backend": p.backend, "device": p.device, "dtype": p.dtype,
                               "file": p.artifact.path, "why": p.why}
        out.update({k: v for k, v in self.described.items() if k not in out})
        out["fallbacks"] = [f"{_label(a.placement)}: {a.error}" for a in self.failed]
        return out


def _label(p: Placement) -> str:
    return f"{p.device} ({p.backend}, {p.dtype}, {p.artifact.path})"


def open_with_fallback(folder: Path, placements: list[Placement], opener: Callable[..., Backend] | None = None,
                       *, explicit: bool, threads: int | None = None) -> tuple[Backend, Selection]:
    """Open the first candidate that works; warn once (DeviceFallbackWarning) if any failed before it.

    With ``explicit`` the user named the device: failing over to a *different* device raises
    DeviceUnavailableError naming every failure instead.
    """
    if not placements:
        raise DeviceUnavailableError("no candidate placements to open")
    if opener is None:
        from granite_rt.backends import open_backend as opener
    failed: list[Attempt] = []
    for placement in placements:
        if explicit and placement.device != placements[0].device:
            break
        try:
            backend = opener(Path(folder), placement, threads=threads)
            described = dict(backend.describe())
            _check_not_silently_cpu(placement, described)
        except (ModelFileError, BackendUnavailableError):
            raise  # a broken file or missing package is the same on every device: say so, don't hop
        except Exception as exc:  # session creation failed: driver, library, unsupported op
            failed.append(Attempt(placement, f"{type(exc).__name__}: {_one_line(exc)}"))
            continue
        selection = Selection(placement, tuple(failed), described)
        if failed:
            warnings.warn(_fallback_message(selection), DeviceFallbackWarning, stacklevel=3)
        if placement.artifact.not_recommended:
            warnings.warn(f"granite-rt: running {placement.artifact.path}, which is NOT recommended: "
                          f"{placement.artifact.not_recommended} (dtype='auto' would not run it)",
                          NotRecommendedWarning, stacklevel=3)
        return backend, selection
    tried = "; ".join(f"{_label(a.placement)}: {a.error}" for a in failed)
    hint = " (pass allow_fallback=True to run on another device instead)" if explicit else ""
    raise DeviceUnavailableError(f"could not open the model on {placements[0].device!r}: {tried}{hint}")


def _check_not_silently_cpu(placement: Placement, described: Mapping[str, Any]) -> None:
    """onnxruntime drops a provider it cannot load and runs on CPU with only a log line: make it fail."""
    active = described.get("providers")
    if placement.backend != "onnx" or not placement.providers or active is None:
        return
    first = placement.providers[0]
    wanted = first if isinstance(first, str) else first[0]
    if wanted not in list(active):
        raise DeviceUnavailableError(f"onnxruntime did not enable {wanted} (session runs on {list(active)})")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _fallback_message(selection: Selection) -> str:
    tried = "; ".join(f"{_label(a.placement)} failed: {a.error}" for a in selection.failed)
    return f"granite-rt: {tried}. Running on {_label(selection.placement)} instead."


def open_best(folder: Path, artifacts: Sequence[Artifact], backend: str = "auto", device: str | list = "auto",
              dtype: str = "auto", *, allow_fallback: bool | None = None, threads: int | None = None,
              opener: Callable[..., Backend] | None = None, **plan: Any) -> tuple[Backend, Selection]:
    """``select_placements`` then ``open_with_fallback``: what Embedder and Reranker call at load."""
    inventory = plan.pop("inventory", None) or probe()
    placements = select_placements(artifacts, backend, device, dtype, allow_fallback=allow_fallback,
                                   folder=Path(folder), inventory=inventory, **plan)
    explicit = device != "auto" and not allow_fallback
    return open_with_fallback(folder, placements, opener, explicit=explicit, threads=threads)


def info_report(model: str | None = None, *, backend: str = "auto", dtype: str = "auto",
                inventory: Inventory | None = None) -> str:
    """The ``granite-rt info [MODEL]`` text: what is installed, and what each device would run and why."""
    inv = inventory or probe(full=True)
    lines = [f"granite-rt on {platform.system()} {platform.machine()}, Python {platform.python_version()}",
             _ort_line(inv), _ov_line(inv), f"cache dir: {default_cache_dir() or 'off (GRANITE_RT_CACHE=off)'}"]
    conflict = onnxruntime_conflict(inv.ort_distributions)
    if conflict:
        lines.append(f"WARNING: {conflict}")
    lines += ["", "devices (auto order: " + " > ".join(AUTO_ORDER) + "; npu only when asked for):"]
    for device in DEVICES_BY_PREFERENCE:
        for be in _backends_for(device, "auto", inv):
            provider = ORT_PROVIDER[device] if be == "onnx" else OV_DEVICE[device]
            status = "available" if inv.present(be, device) else "absent: " + inv.absent_reason(be, device)
            lines.append(f"  {device:<10} {be:<9} {provider:<26} {status}")
    if model is not None:
        lines += [""] + _model_lines(model, backend, dtype, inv)
    return "\n".join(lines)


# Every device, in the order info lists them: the auto order with the NPU before the CPU.
DEVICES_BY_PREFERENCE = AUTO_ORDER[:-1] + ("npu", "cpu")


def _ort_line(inv: Inventory) -> str:
    if inv.ort_version is None:
        return f"onnxruntime: not installed ({inv.errors.get('onnx', '')})"
    return (f"onnxruntime {inv.ort_version} ({', '.join(inv.ort_distributions) or 'distribution unknown'}): "
            f"providers {', '.join(inv.ort_providers)}")


def _ov_line(inv: Inventory) -> str:
    if inv.ov_version is None:
        return f"openvino: not installed ({inv.errors.get('openvino', '')}); pip install 'granite-rt[openvino]'"
    devices = "; ".join(f"{d} = {inv.ov_names.get(d, d)} [{' '.join(inv.ov_capabilities.get(d, ()))}]"
                        for d in inv.ov_devices)
    return f"openvino {inv.ov_version}: {devices or 'no devices'}"


def _model_lines(model: str, backend: str, dtype: str, inv: Inventory) -> list[str]:
    """Per device: backend, dtype, file and why for MODEL; then what device='auto' picks."""
    from granite_rt.model_folder import load_spec, resolve_model

    try:
        spec = load_spec(resolve_model(model, backend, dtype))
    except Exception as exc:  # the report names the problem instead of failing as a whole
        return [f"model {model}: cannot be read: {type(exc).__name__}: {_one_line(exc)}"]
    files = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in spec.artifacts)
    lines = [f"model {spec.folder} ({spec.kind}): {files}",
             f"  {'device':<10} {'backend':<9} {'dtype':<6} {'file':<46} why"]
    ctx = _Context(inv, default_cache_dir(), spec.folder, "latency", None)
    for device in DEVICES_BY_PREFERENCE:
        for be in _backends_for(device, backend, inv):
            try:
                chosen = _choose_dtype(spec.artifacts, be, device, dtype, inv, explicit=False)
            except GraniteRTError as exc:
                chosen, note = None, _one_line(exc)
            else:
                has_backend = any(a.backend == be for a in spec.artifacts)
                note = f"no {be} file runs at dtype={dtype}" if has_backend else f"the folder has no {be} file"
            if chosen is None:
                lines.append(f"  {device:<10} {be:<9} {'-':<6} {'-':<46} {note}")
                continue
            dt, artifact, why = chosen
            if not inv.present(be, device):
                why = f"{why} (device absent here)"
            lines.append(f"  {device:<10} {be:<9} {dt:<6} {artifact.path:<46} {why}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxRuntimeConflictWarning)
            placements = select_placements(spec.artifacts, backend, "auto", dtype, folder=spec.folder, inventory=inv)
    except (GraniteRTError, ValueError) as exc:
        lines.append(f"device='auto' cannot run it: {_one_line(exc)}")
    else:
        lines.append(f"device='auto' runs {_label(placements[0])}"
                     + (f"; falls back to {', '.join(_label(p) for p in placements[1:])}" if placements[1:] else ""))
    return lines
