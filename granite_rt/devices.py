"""Where a model runs: the placement policy over the registered backends.

``probe`` asks each registered backend what its engine offers here (an ``Inventory``);
``select_placements`` turns (backend, device, dtype) into an ordered list of concrete ``Placement``s
over the artifacts a model folder holds; ``open_with_fallback`` checks each candidate's files, opens
the first that works, warns once about the ones that did not and returns a ``Selection`` for ``info``.
What a backend's files, options and loading are lives in ``granite_rt.backends``; importing this
module imports no engine.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from granite_rt import backends, host
from granite_rt.backends.base import Artifact, Backend, EngineInventory, PlanContext, Placement
from granite_rt.backends.onnxruntime import OnnxRuntimeConflictWarning, OrtOptions
from granite_rt.backends.onnxruntime import distributions as onnxruntime_distributions  # noqa: F401 - public name
from granite_rt.errors import BackendUnavailableError, DeviceUnavailableError, ModelFileError, one_line
from granite_rt.host import INT8_DOT_FLAGS  # noqa: F401 - public name, documented in docs/devices.md
from granite_rt.model_folder import verify_artifact

DTYPES = ("auto", "fp32", "fp16", "bf16", "int8", "int8+bf16")
WORKLOADS = ("latency", "throughput")

# device="auto" walks this order; the NPU is left out on purpose (static shapes cap the sequence
# length below the model's, see docs/devices.md) and is used only when asked for by name, as is any
# device a registered backend adds that is not listed here.
AUTO_ORDER = ("tensorrt", "cuda", "directml", "intel-gpu", "cpu")
# Every known device, in the order info lists them: the auto order with the NPU before the CPU.
DEVICES_BY_PREFERENCE = AUTO_ORDER[:-1] + ("npu", "cpu")

# dtype="auto": compute precisions tried in order per device (first with a runnable artifact wins).
# On a CPU without int8 dot-product instructions OpenVINO tries fp32 first (see NO_INT8_DOT); int8+bf16
# (OpenVINO's only) needs a CPU with BF16. A measured decision (granite_rt.tune) replaces this order on the CPU.
AUTO_DTYPES = {"cpu": ("int8+bf16", "int8", "fp32"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16", "fp32"),
               "directml": ("fp16", "fp32"), "intel-gpu": ("fp16", "fp32", "int8"), "npu": ("fp16", "int8")}
DEFAULT_AUTO_DTYPES = ("fp32",)   # a device a registered backend adds

# The CPU rule, re-derived from every CPU class measured (2 cores each; docs/devices.md, bench/README.md). OpenVINO
# leads the CPU order only where its paths were the fastest: an AMD Zen 4 (AVX-512 VNNI + BF16), whose fastest path
# on batches was the INT8 IR with a bf16 hint for the unquantized ops (int8+bf16: 1.20-1.49x faster than INT8 with
# the f32 hint, onnxruntime INT8 and OpenVINO bf16), but not for an embedder's queries (QUERY_LOADS_ORT).
# Elsewhere onnxruntime's INT8 was the fastest: on an AVX2-only Zen 3
# (where OpenVINO's INT8 also ran slower than its fp32, so OpenVINO tries fp32 first there), on an Intel Xeon with
# AVX-512 VNNI + BF16 + FP16 and no AMX (granite-rt tune, 97m shape: onnxruntime INT8 0.301 s for 4 x 384 tokens and
# 7.0 ms per query, OpenVINO INT8 0.335 s / 9.8 ms, int8+bf16 0.367 s / 9.8 ms; OpenVINO bf16 0.762 s, slower than
# its fp32's 0.620 s), and on a Xeon with AMX once int8+bf16 is refused there (wrong vectors,
# openvino.amx_int8_bf16_wrong; two bench --quick runs of 2026-12-03, 97m shape: onnxruntime INT8 7.51 / 8.46 docs/s
# on 4 x 512 tokens, 18.97 / 21.09 on 24 Cranfield docs, 13.7 / 14.8 ms per query; OpenVINO INT8 7.78 / 8.30,
# 16.40 / 17.67, 25.1 / 16.9 ms). There the bf16 hint is not tried either. A measured decision (granite_rt.tune)
# replaces the rule on any CPU (on AMX OpenVINO bf16 led 512-token documents: 12.74 docs/s in the second run).
NO_INT8_DOT = " (this CPU has no int8 dot-product instructions: VNNI, AMX or Arm dotprod)"
ORT_MEASURED_FASTER = (" (measured fastest on CPUs like this one: int8 dot products without a Zen 4's BF16; "
                       "docs/devices.md)")
# On the Zen 4 OpenVINO int8+bf16 leads batches, onnxruntime INT8 an embedder's queries and its cold start
# (2026-12-04, 2 cores, 97m shape: granite-rt tune 3.7 vs 6.0 ms per 11-token query, 0.098 vs 0.093 s per
# 2 x 384 tokens; python -m bench one 32-token query 7.4 vs 10.9 ms, import + load + first vector 0.48 s /
# 126 MiB vs 0.67 s / 214 MiB, 8 x 512-token docs 10.95 vs 14.14 docs/s): so an embedder's workload="latency"
# load runs onnxruntime INT8 there and workload="throughput" (embed-corpus) OpenVINO int8+bf16; a reranker
# scores a query's candidates in one batch (20 x 256 tokens 4.01 vs 2.60 s) and keeps OpenVINO.
QUERY_LOADS_ORT = (" (measured fastest for an embedder's queries on CPUs like this one, where OpenVINO int8+bf16 "
                   "leads batches: workload='throughput' runs that; docs/devices.md)")
PREFERRED_BECAUSE = {("openvino", "cpu", "int8+bf16"): " (the INT8 IR with its unquantized ops in bf16: this CPU has "
                                                      "int8 dot products and BF16)"}


def openvino_leads_cpu(vendor: str, flags: frozenset[str], queries: bool = False) -> bool | None:
    """Whether OpenVINO leads the CPU order on a CPU of ``vendor`` with ``flags`` (the rule above) for batches,
    or with ``queries`` for an embedder's latency loads (one short query at a time, QUERY_LOADS_ORT); None
    when the flags are unknown (no /proc/cpuinfo): the registry's order."""
    if not flags:
        return None
    if flags & {"amx_int8", "amx_bf16"}:   # int8+bf16 is wrong there; OpenVINO's INT8 alone was not faster
        return False
    return vendor == "AuthenticAMD" and "avx512_bf16" in flags and "avx512_vnni" in flags and not queries


# Compute modes that only some backends have (OpenVINO's INT8 IR with a bf16 hint).
BACKEND_MODES = ("int8+bf16",)
# The CPU compute precisions granite_rt.tune measures (each where the folder and this CPU can run it).
CPU_DTYPES = ("fp32", "bf16", "int8", "int8+bf16")


class NotRecommendedWarning(UserWarning):
    """The artifact that runs is marked not recommended (INT8 gate missed, dynamic INT8); dtype="auto" skips it."""


class DeviceFallbackWarning(UserWarning):
    """A planned device could not be used and the model runs on a later candidate."""


@dataclass(frozen=True)
class Inventory:
    """What this machine offers: each registered backend's engine (``EngineInventory``), the CPU's int8
    dot-product instructions (None: unknown) and whether OpenVINO leads its CPU order."""

    engines: Mapping[str, EngineInventory] = field(default_factory=dict)
    cpu_int8_dot: tuple[str, ...] | None = None
    openvino_leads_cpu: bool | None = None   # ``openvino_leads_cpu``: None keeps the registry's order
    openvino_leads_cpu_queries: bool | None = None   # the same for an embedder's latency loads; None: as above

    def for_queries(self) -> Inventory:
        """The inventory an embedder's ``workload="latency"`` load plans with: the CPU order measured for queries."""
        if self.openvino_leads_cpu_queries is None or self.openvino_leads_cpu_queries == self.openvino_leads_cpu:
            return self
        return replace(self, openvino_leads_cpu=self.openvino_leads_cpu_queries)

    def engine(self, backend: str) -> EngineInventory:
        return self.engines.get(backend) or EngineInventory(error=f"{backend} was not probed")

    def present(self, backend: str, device: str) -> bool:
        """Whether ``device`` is reachable through ``backend`` here."""
        return backends.get(backend).present(self.engine(backend), device)

    def absent_reason(self, backend: str, device: str) -> str:
        """Why ``device`` is not reachable through ``backend`` (with the fix)."""
        return backends.get(backend).absent_reason(self.engine(backend), device)


def probe(full: bool = False) -> Inventory:
    """Ask every registered backend what its engine offers here (``full``: names and capabilities too,
    which may import an engine that ``auto`` would not need)."""
    vendor, flags = host.cpu_vendor(), host.cpu_flags()
    return Inventory({b.name: b.probe(full) for b in backends.registered()}, host.cpu_int8_dot(),
                     openvino_leads_cpu(vendor, flags), openvino_leads_cpu(vendor, flags, queries=True))


def known_devices() -> tuple[str, ...]:
    """Every device a registered backend drives: the known order first, then the ones backends add."""
    extra = [d for b in backends.registered() for d in b.devices if d not in DEVICES_BY_PREFERENCE]
    return DEVICES_BY_PREFERENCE + tuple(dict.fromkeys(extra))


@dataclass(frozen=True)
class DeviceInfo:
    """One device reachable through one backend here."""

    name: str            # cpu, cuda, tensorrt, directml, intel-gpu, npu, ...
    backend: str         # a registered backend's name
    provider: str        # the engine's name of the device (onnxruntime execution provider, OpenVINO device)
    description: str = ""


def available_devices(inventory: Inventory | None = None) -> list[DeviceInfo]:
    """Devices usable here, in the order ``device="auto"`` prefers them (NPU last: only on request)."""
    inv = inventory or probe()
    out = []
    for device in known_devices():
        for name in backends_for(device, "auto", inv):
            if inv.present(name, device):
                backend, engine = backends.get(name), inv.engine(name)
                provider = backend.devices[device]
                described = [engine.names.get(d, d) for d in engine.devices
                             if d == provider or d.startswith(provider + ".")]
                desc = (f"{backend.engine} {engine.version}" if not engine.names or not described
                        else "; ".join(described))
                out.append(DeviceInfo(device, name, provider, desc))
    return out


def backends_for(device: str, backend: str, inv: Inventory | None = None) -> tuple[str, ...]:
    """Registered backends that can drive ``device``, preferred first (the registry's order, except on a
    CPU where OpenVINO does not lead: onnxruntime first, see ``openvino_leads_cpu``)."""
    options = tuple(b.name for b in backends.registered() if device in b.devices)
    if device == "cpu" and inv is not None and _onnx_leads(inv) and "onnx" in options:
        options = ("onnx",) + tuple(b for b in options if b != "onnx")
    return options if backend == "auto" else tuple(b for b in options if b == backend)


def _onnx_leads(inv: Inventory) -> bool:
    return inv.cpu_int8_dot == () or inv.openvino_leads_cpu is False


def select_placements(artifacts: Sequence[Artifact] | Any, backend: str = "auto", device: str | list = "auto",
                      dtype: str = "auto", *, allow_fallback: bool | None = None, cache_dir: Path | None = None,
                      folder: Path | None = None, workload: str = "latency", kind: str | None = None,
                      inventory: Inventory | None = None, tuned: Mapping[str, str] | None = None) -> list[Placement]:
    """Ordered candidates for (backend, device, dtype) over ``artifacts`` and the devices present here.

    ``device`` is a name from ``known_devices()``, "auto", or a raw onnxruntime provider list (names or
    ``(name, options)`` tuples). An explicit device that cannot be used raises
    DeviceUnavailableError unless ``allow_fallback``; then the auto order follows it. ``tuned`` (a measured
    choice, ``granite_rt.tune.Decision.choice``) goes first among the CPU placements when dtype is "auto".
    ``kind="embedder"`` with ``workload="latency"`` plans with the CPU order measured for queries
    (``Inventory.for_queries``).
    """
    artifacts = getattr(artifacts, "artifacts", artifacts)  # a ModelSpec is accepted too
    _check_choice("backend", backend, ("auto",) + tuple(b.name for b in backends.registered()))
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("workload", workload, WORKLOADS)
    inv = inventory or probe()
    planned = inv.for_queries() if kind == "embedder" and workload == "latency" else inv
    ctx = _Context(planned, cache_dir if cache_dir is not None else host.cache_dir(), folder, workload, tuned,
                   queries_rule=planned is not inv)
    if not isinstance(device, str):
        return _warn_conflict(inv, [_raw_placement(artifacts, backend, list(device), dtype, ctx)])
    _check_choice("device", device, ("auto",) + known_devices())
    _check_backend_installed(backend, inv)
    if device == "auto":
        placements = _plan(artifacts, backend, AUTO_ORDER, dtype, ctx, skip_absent=True)
        if not placements:
            raise DeviceUnavailableError(_nothing_runs(artifacts, backend, dtype, inv))
        return _warn_conflict(inv, placements)
    if not backends_for(device, backend):
        raise ValueError(f"device={device!r} does not run on backend={backend!r}; it runs on "
                         f"{' or '.join(backends_for(device, 'auto'))} (use backend='auto')")
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
    """Warn when a planned backend's install is broken (two onnxruntime distributions: OnnxRuntimeConflictWarning)."""
    for name in dict.fromkeys(p.backend for p in placements):
        message = backends.get(name).conflict(inv.engine(name))
        if message:
            warnings.warn(message, OnnxRuntimeConflictWarning if name == "onnx" else UserWarning, stacklevel=3)
    return placements


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _check_backend_installed(backend: str, inv: Inventory) -> None:
    if backend != "auto" and inv.engine(backend).version is None:
        b = backends.get(backend)
        raise BackendUnavailableError(f"backend={backend!r} needs {b.engine}: {inv.engine(backend).error or ''}; "
                                      f"{b.install}")


@dataclass(frozen=True)
class _Context:
    inv: Inventory
    cache_dir: Path | None
    folder: Path | None
    workload: str
    tuned: Mapping[str, str] | None = None   # a measured CPU choice (granite_rt.tune): backend, dtype, file, why
    queries_rule: bool = False               # the CPU order is the queries' (Inventory.for_queries), not the batches'


def _plan(artifacts: Sequence[Artifact], backend: str, devices: Sequence[str], dtype: str, ctx: _Context,
          *, skip_absent: bool) -> list[Placement]:
    """One placement per (device, backend) in order that has a runnable artifact at ``dtype``."""
    out = []
    for device in devices:
        first = len(out)
        for be in backends_for(device, backend, ctx.inv):
            if skip_absent and not ctx.inv.present(be, device):
                continue
            chosen = _choose_dtype(artifacts, be, device, dtype, ctx.inv, explicit=not skip_absent)
            if chosen is not None:
                dt, artifact, why = chosen
                if backend == "auto" and device == "cpu" and be == "onnx" and _onnx_leads(ctx.inv):
                    why += "; onnxruntime before OpenVINO" + (NO_INT8_DOT if ctx.inv.cpu_int8_dot == ()
                                                              else QUERY_LOADS_ORT if ctx.queries_rule
                                                              else ORT_MEASURED_FASTER)
                out.append(_placement(be, device, dt, artifact, why, ctx))
        out[first:] = _prefer_recommended(out[first:], artifacts, device, dtype)
        if device == "cpu" and dtype == "auto" and ctx.tuned is not None:
            out[first:] = _tuned_first(out[first:], artifacts, backend, ctx)
    if not out and not skip_absent:
        raise _no_artifact(artifacts, backend, devices[0], dtype)
    return out


def _prefer_recommended(placements: list[Placement], artifacts: Sequence[Artifact], device: str,
                        dtype: str) -> list[Placement]:
    """dtype="auto" where an artifact was skipped as not recommended: a backend that still runs the preferred
    precision goes first (a gated INT8 on onnxruntime before OpenVINO fp32 when OpenVINO's INT8 failed)."""
    if dtype != "auto" or len(placements) < 2 or not any(a.not_recommended for a in artifacts):
        return placements
    order = AUTO_DTYPES.get(device, DEFAULT_AUTO_DTYPES)
    ranked = sorted(placements, key=lambda p: order.index(p.dtype) if p.dtype in order else len(order))
    if ranked[0] is not placements[0]:
        ranked[0] = replace(ranked[0], why=f"{ranked[0].why}; before {placements[0].backend}, whose "
                                           f"{placements[0].why}")
    return ranked


def _tuned_first(planned: list[Placement], artifacts: Sequence[Artifact], backend: str,
                 ctx: _Context) -> list[Placement]:
    """The measured CPU placement first, the built-in order after it as fallbacks (unchanged if its file is gone)."""
    tuned = ctx.tuned or {}
    artifact = next((a for a in artifacts if a.path == tuned.get("file") and a.backend == tuned.get("backend")), None)
    if artifact is None or backend not in ("auto", artifact.backend) or not ctx.inv.present(artifact.backend, "cpu"):
        return planned
    chosen = _placement(artifact.backend, "cpu", tuned["dtype"], artifact, tuned.get("why", "measured"), ctx,
                        side_by_side=tuned.get("side_by_side") != "off")
    return [chosen] + [p for p in planned if (p.backend, p.dtype, p.artifact) != (chosen.backend, chosen.dtype,
                                                                              chosen.artifact)]


def cpu_candidates(artifacts: Sequence[Artifact] | Any, *, folder: Path | None = None,
                   inventory: Inventory | None = None, cache_dir: Path | None = None,
                   workload: str = "latency") -> list[Placement]:
    """Every CPU placement the folder allows here (each installed backend × CPU_DTYPES), for granite_rt.tune,
    with the options of a ``workload`` load (the same placements in the same order for either workload)."""
    _check_choice("workload", workload, WORKLOADS)
    artifacts = getattr(artifacts, "artifacts", artifacts)
    inv = inventory or probe()
    ctx = _Context(inv, cache_dir if cache_dir is not None else host.cache_dir(), folder, workload)
    out = []
    for be in backends_for("cpu", "auto", inv):
        if not inv.present(be, "cpu"):
            continue
        for dt in CPU_DTYPES:
            chosen = _choose_dtype(artifacts, be, "cpu", dt, inv, explicit=False)
            if chosen is not None:
                out.append(_placement(be, "cpu", chosen[0], chosen[1], "tuning candidate", ctx))
    return out


def _choose_dtype(artifacts: Sequence[Artifact], backend: str, device: str, dtype: str, inv: Inventory,
                  *, explicit: bool) -> tuple[str, Artifact, str] | None:
    """(compute dtype, artifact, why) for ``device`` on ``backend``, or None when none is runnable.

    dtype="auto" passes over artifacts marked not recommended (the INT8 gate) and says so in ``why``."""
    wanted = AUTO_DTYPES.get(device, DEFAULT_AUTO_DTYPES) if dtype == "auto" else (dtype,)
    slow_int8 = backend == "openvino" and device == "cpu" and dtype == "auto" and inv.cpu_int8_dot == ()
    if slow_int8:
        wanted = ("fp32", "int8")
    engine = backends.get(backend)
    if dtype == "auto":  # a mode only some backends have is no "missing artifact" for the others; the bf16 hint
        # only where OpenVINO leads (on the Xeon without AMX its bf16 ran slower than its fp32)
        wanted = tuple(dt for dt in wanted if dt not in BACKEND_MODES or (
            (device, dt) in engine.runnable and not (device == "cpu" and inv.openvino_leads_cpu is False)))
    lacking: dict[str, str] = {}  # precisions this CPU cannot compute -> why (the backend's unsupported_dtype)
    skipped: list[str] = []  # artifacts dtype="auto" passed over (not recommended), for why
    for i, dt in enumerate(wanted):
        precisions = engine.runnable.get((device, dt), ())
        artifact = _pick_artifact(artifacts, backend, precisions, recommended_only=dtype == "auto")
        if artifact is None and dtype == "auto":  # no file: no need to ask the engine (which may import it)
            unrecommended = _pick_artifact(artifacts, backend, precisions)
            if unrecommended is not None:
                skipped.append(f"{unrecommended.path} skipped: {unrecommended.not_recommended}")
            continue
        unsupported = engine.unsupported_dtype(inv.engine(backend), device, dt)
        if unsupported:
            if dtype != "auto" and explicit:
                raise DeviceUnavailableError(unsupported)
            lacking[dt] = unsupported
            continue
        if artifact is None:
            continue
        if dtype != "auto":
            why = f"dtype={dt} as asked"
            if artifact.not_recommended:
                why += f" (NOT recommended: {artifact.not_recommended})"
        elif skipped:
            why = f"{'; '.join(skipped)}; so {dt}"
        elif i == len(lacking):  # nothing before it but precisions this CPU lacks
            why = f"{dt} is the preferred precision on {device}" + PREFERRED_BECAUSE.get((backend, device, dt), "")
            if slow_int8:
                why += " for OpenVINO" + NO_INT8_DOT
            if lacking:
                why += f" (passed over: {'; '.join(lacking.values())})"
        else:
            why = f"no {'/'.join(d for d in wanted[:i] if d not in lacking)} artifact for {backend}, so {dt}"
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


def _placement(backend: str, device: str, dtype: str, artifact: Artifact, why: str, ctx: _Context, *,
               side_by_side: bool = True) -> Placement:
    """One candidate with its backend's own settings for it (``side_by_side``: see PlanContext)."""
    key = artifact_key(artifact, ctx.folder) if ctx.cache_dir is not None else None
    plan = PlanContext(ctx.inv.engine(backend), key, ctx.cache_dir, ctx.workload, side_by_side)
    options = backends.get(backend).options(device, dtype, artifact, plan)
    return Placement(backend=backend, device=device, dtype=dtype, artifact=artifact, options=options, why=why)


def artifact_key(artifact: Artifact, folder: Path | None) -> str:
    """A cache key per model file: its manifest sha256s, else its resolved path with its files' sizes and mtimes.

    A replaced file (even an IR's .bin alone, which OpenVINO's own cache check misses) gets a new key.
    """
    if artifact.sha256:
        return hashlib.sha256("".join([artifact.sha256, *(d for _, d in artifact.files)]).encode()).hexdigest()[:16]
    if folder is None:
        return hashlib.sha256(artifact.path.encode()).hexdigest()[:16]
    files = backends.get(artifact.backend).files(folder, artifact)
    parts = [str(files[0].resolve())]
    for path in files:
        if path.exists():
            stat = path.stat()
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _raw_placement(artifacts: Sequence[Artifact], backend: str, providers: list, dtype: str, ctx: _Context) -> Placement:
    """A user-given onnxruntime provider list: validated, used as is, device named after its first entry."""
    if backend not in ("auto", "onnx"):
        raise ValueError(f"a provider list is for backend='onnx'; {backend} takes a device name "
                         f"({', '.join(backends.get(backend).devices)})")
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
    engine = ctx.inv.engine("onnx")
    missing = [n for n in names if n not in engine.devices]
    if missing:
        raise DeviceUnavailableError(f"providers {missing} are not available in onnxruntime {engine.version}, "
                                     f"which offers {list(engine.devices)}")
    by_provider = {provider: device for device, provider in backends.get("onnx").devices.items()}
    device = by_provider.get(names[0], names[0].removesuffix("ExecutionProvider").lower())
    chosen = _choose_dtype(artifacts, "onnx", device if device in AUTO_DTYPES else "cpu", dtype, ctx.inv,
                           explicit=True)
    if chosen is None and dtype in ("auto", "fp32"):
        artifact = _pick_artifact(artifacts, "onnx", ("fp32",))
        chosen = ("fp32", artifact, "fp32 for a custom provider list") if artifact else None
    if chosen is None:
        raise _no_artifact(artifacts, "onnx", device, dtype)
    dt, artifact, why = chosen
    options = OrtOptions(tuple(tuple(p) if isinstance(p, tuple) else p for p in providers),
                         io_binding=device in ("cuda", "tensorrt"))
    return Placement(backend="onnx", device=device, dtype=dt, artifact=artifact, options=options,
                     why=f"provider list as given; {why}")


def _no_artifact(artifacts: Sequence[Artifact], backend: str, device: str, dtype: str) -> Exception:
    have = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in artifacts) or "none"
    runs = sorted({dt for b in backends.registered() if backend in ("auto", b.name)
                   for (dev, dt) in b.runnable if dev == device})
    if dtype != "auto" and dtype not in runs:
        return ValueError(f"dtype={dtype!r} is not supported on device {device!r}"
                          + (f" with backend={backend!r}" if backend != "auto" else "") + f"; it runs {runs}")
    return ModelFileError(f"no model file runs on {device!r} at dtype={dtype!r} with backend={backend!r}; "
                          f"the folder has: {have}")


def _nothing_runs(artifacts: Sequence[Artifact], backend: str, dtype: str, inv: Inventory) -> str:
    have = ", ".join(f"{a.path} ({a.backend} {a.precision})" for a in artifacts) or "no model files"
    found = available_devices(inv)
    reachable = [d.name + "/" + d.backend for d in found] or ["none"]
    refused = [] if dtype == "auto" else [  # a precision a backend refuses on a device here says why
        why for d in found if (why := backends.get(d.backend).unsupported_dtype(inv.engine(d.backend), d.name, dtype))]
    return (f"no device here can run this model with backend={backend!r}, dtype={dtype!r}: devices "
            f"{', '.join(reachable)}; model files: {have}" + "".join(f"; {why}" for why in refused))


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
        out["fallbacks"] = [f"{label(a.placement)}: {a.error}" for a in self.failed]
        return out


def label(p: Placement) -> str:
    """``device (backend, dtype, file)``, as fallback messages and ``info`` name a placement."""
    return f"{p.device} ({p.backend}, {p.dtype}, {p.artifact.path})"


def open_verified(folder: Path, placement: Placement, *, threads: int | None = None) -> Backend:
    """Check ``placement.artifact``'s files (ModelFileError naming the file), then compile it on its backend."""
    verify_artifact(Path(folder), placement.artifact)
    return backends.open_backend(folder, placement, threads=threads)


def open_with_fallback(folder: Path, placements: list[Placement], opener: Callable[..., Backend] = open_verified,
                       *, explicit: bool, threads: int | None = None) -> tuple[Backend, Selection]:
    """Open the first candidate that works; warn once (DeviceFallbackWarning) if any failed before it.

    With ``explicit`` the user named the device: failing over to a *different* device raises
    DeviceUnavailableError naming every failure instead.
    """
    if not placements:
        raise DeviceUnavailableError("no candidate placements to open")
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
            failed.append(Attempt(placement, f"{type(exc).__name__}: {one_line(exc, 300)}"))
            continue
        selection = Selection(placement, tuple(failed), described)
        if failed:
            warnings.warn(_fallback_message(selection), DeviceFallbackWarning, stacklevel=3)
        if placement.artifact.not_recommended:
            warnings.warn(f"granite-rt: running {placement.artifact.path}, which is NOT recommended: "
                          f"{placement.artifact.not_recommended} (dtype='auto' would not run it)",
                          NotRecommendedWarning, stacklevel=3)
        return backend, selection
    tried = "; ".join(f"{label(a.placement)}: {a.error}" for a in failed)
    hint = " (pass allow_fallback=True to run on another device instead)" if explicit else ""
    raise DeviceUnavailableError(f"could not open the model on {placements[0].device!r}: {tried}{hint}")


def _check_not_silently_cpu(placement: Placement, described: Mapping[str, Any]) -> None:
    """onnxruntime drops a provider it cannot load and runs on CPU with only a log line: make it fail."""
    active = described.get("providers")
    providers = getattr(placement.options, "providers", ())
    if placement.backend != "onnx" or not providers or active is None:
        return
    first = providers[0]
    wanted = first if isinstance(first, str) else first[0]
    if wanted not in list(active):
        raise DeviceUnavailableError(f"onnxruntime did not enable {wanted} (session runs on {list(active)})")


def _fallback_message(selection: Selection) -> str:
    tried = "; ".join(f"{label(a.placement)} failed: {a.error}" for a in selection.failed)
    return f"granite-rt: {tried}. Running on {label(selection.placement)} instead."


def open_best(folder: Path, artifacts: Sequence[Artifact], backend: str = "auto", device: str | list = "auto",
              dtype: str = "auto", *, allow_fallback: bool | None = None, threads: int | None = None,
              opener: Callable[..., Backend] = open_verified, **plan: Any) -> tuple[Backend, Selection]:
    """``select_placements`` then ``open_with_fallback``: what Embedder and Reranker call at load."""
    inventory = plan.pop("inventory", None) or probe()
    placements = select_placements(artifacts, backend, device, dtype, allow_fallback=allow_fallback,
                                   folder=Path(folder), inventory=inventory, **plan)
    explicit = device != "auto" and not allow_fallback
    return open_with_fallback(folder, placements, opener, explicit=explicit, threads=threads)


def choose(artifacts: Sequence[Artifact], backend: str, device: str, dtype: str,
           inv: Inventory) -> tuple[str, Artifact, str] | None:
    """(dtype, artifact, why) that ``backend`` would run on ``device`` at ``dtype``, for reports; None: nothing."""
    return _choose_dtype(artifacts, backend, device, dtype, inv, explicit=False)


def __getattr__(name: str) -> Any:
    """Names that moved: kept one release with a DeprecationWarning."""
    moved = {"default_cache_dir": (host, "cache_dir"), "cpu_int8_dot": (host, "cpu_int8_dot"),
             "accelerator_nodes": (host, "accelerator_nodes")}
    if name in moved:
        module, new = moved[name]
        warnings.warn(f"granite_rt.devices.{name} moved to {module.__name__}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(module, new)
    if name == "info_report":
        warnings.warn("granite_rt.devices.info_report moved to granite_rt.report.info_report",
                      DeprecationWarning, stacklevel=2)
        import granite_rt.report as report  # the report imports this module: resolved only on this old path

        return report.info_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
