"""Facts about the machine this process runs on, read once: CPU model and flags, int8 dot-product
instructions, physical cores, accelerator device nodes, installed versions, and the cache directory.

The planner (``devices``), the backends, the evaluation and the benchmarks all read the host through
this module, so ``/proc/cpuinfo`` is parsed in one place.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# CPU extensions with int8 dot products (x86 VNNI/AMX, Arm dotprod), as /proc/cpuinfo names them. They decide
# which CPU engine runs INT8 fastest (docs/devices.md has the measurements behind the rule in ``devices``).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
_NUMPY_INT8_DOT = {"AVX512VNNI": "avx512_vnni", "ASIMDDP": "asimddp"}   # numpy's runtime CPU feature names

CACHE_OFF = ("off", "none", "0")


@functools.lru_cache(maxsize=8)
def _cpuinfo(path: Path) -> tuple[str, frozenset[str], str]:
    """(model name, flags, vendor id) of the first processor listed in ``path``; ("", {}, "") when it cannot be
    read."""
    model, flags, vendor = "", frozenset(), ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if model and flags and vendor:
                    break
    except OSError:
        pass
    return model, flags, vendor


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    return _cpuinfo(cpuinfo)[1]


def cpu_vendor(cpuinfo: Path = CPUINFO) -> str:
    """The x86 vendor id (GenuineIntel, AuthenticAMD) of /proc/cpuinfo; "" where it has none (Arm, no file)."""
    return _cpuinfo(cpuinfo)[2]


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` reports."""
    return _cpuinfo(cpuinfo)[0] or platform.processor() or platform.machine()


def cpu_facts(cpuinfo: Path = CPUINFO) -> dict[str, object]:
    """This CPU as the caches of measured and compiled things key it: model, architecture and every flag
    (``granite-rt tune``'s decisions, onnxruntime's optimized graphs)."""
    return {"cpu": cpu_model(cpuinfo), "machine": platform.machine(), "flags": sorted(cpu_flags(cpuinfo))}


def cpu_int8_dot(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """This CPU's int8 dot-product extensions: numpy's runtime feature table, plus /proc/cpuinfo flags on Linux."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    found = {name for key, name in _NUMPY_INT8_DOT.items() if features.get(key)}
    found |= cpu_flags(cpuinfo) & set(INT8_DOT_FLAGS)
    return tuple(sorted(found))


def is_arm() -> bool:
    return platform.machine().lower() in {"arm64", "aarch64"}


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share execution units, so they don't help)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    siblings = per_core = 0
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "siblings":
                    siblings = int(value)
                elif key.strip() == "cpu cores":
                    per_core = int(value)
                if siblings and per_core:
                    break
    except (OSError, ValueError):
        return usable
    if siblings and per_core:  # threads per core, e.g. 2 with SMT
        return max(1, usable // max(1, siblings // per_core))
    return usable


def accelerator_nodes(dev: Path = Path("/dev")) -> bool:
    """Whether a GPU or NPU may be present: Linux render / accel device nodes; True on other systems."""
    if platform.system() != "Linux":
        return True
    return any(dev.glob("dri/renderD*")) or any(dev.glob("accel/accel*"))


def installed_version(distribution: str) -> str | None:
    """The installed version of a Python distribution, without importing it; None when absent.

    Read from the names of the ``NAME-VERSION.dist-info`` folders on ``sys.path``, the first of a name as
    importlib.metadata finds it. Measured in a fresh process (2-core AMD EPYC Zen 4, 2026-12-08), importlib.metadata
    took 23-27 ms to import and 4 ms for the 14 names a load asks for (openvino and the onnxruntime distributions),
    about a tenth of a cold start, while listing ``sys.path`` took 0.5 ms. importlib.metadata still answers what a
    listing cannot tell: a name with an ``.egg-info``, a zip or ``.egg`` on ``sys.path``, or another finder of
    distributions on ``sys.meta_path``.
    """
    project = _project_name(distribution)
    listed = None if _other_distribution_finders() else _dist_info_versions(_path_state())
    if listed is not None and project not in listed[1]:
        return listed[0].get(project)
    from importlib.metadata import PackageNotFoundError, version  # ~25 ms of imports: only where a listing can't tell

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _project_name(name: str) -> str:
    """A distribution name as Python packaging compares them (PEP 503): runs of ``-_.`` are one ``-``, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _other_distribution_finders() -> bool:
    from importlib.machinery import PathFinder

    return any(finder is not PathFinder and hasattr(finder, "find_distributions") for finder in sys.meta_path)


def _path_state() -> tuple[tuple[str, int], ...]:
    """``sys.path`` with each entry's modification time: an install or uninstall there changes it."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, -1))
    return tuple(state)


@functools.lru_cache(maxsize=4)
def _dist_info_versions(path: tuple[tuple[str, int], ...]) -> tuple[dict[str, str], frozenset[str]] | None:
    """({project name: version} of the dist-info folders in ``path``'s directories, the first of a name kept; the
    project names of the ``.egg-info`` entries, whose versions are inside them), or None where ``path`` holds a
    zip or an ``.egg``, whose distributions only importlib.metadata reads."""
    versions: dict[str, str] = {}
    eggs: set[str] = set()
    for entry, _ in path:
        if entry.endswith(".egg"):
            return None
        try:
            names = os.listdir(entry or ".")
        except NotADirectoryError:
            return None
        except OSError:  # absent, or an import hook's name: no distributions there for importlib.metadata either
            continue
        for name in names:
            stem, _, kind = name.rpartition(".")
            if kind == "dist-info":
                project, _, version = stem.partition("-")
                if version:
                    versions.setdefault(_project_name(project), version)
            elif kind == "egg-info":
                eggs.add(_project_name(stem.partition("-")[0]))
    return versions, frozenset(eggs)


def cache_dir() -> Path | None:
    """Where TensorRT engines, compiled OpenVINO models, onnxruntime's optimized graphs and file checks are cached:
    $GRANITE_RT_CACHE or the user cache (read at each call, so a process can change it). ``GRANITE_RT_CACHE=off``
    turns every on-disk cache off (None)."""
    setting = os.environ.get("GRANITE_RT_CACHE", "")
    if setting.lower() in CACHE_OFF:
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "granite-rt"


def writable_dir(folder: Path) -> bool:
    """Whether ``folder`` exists (made if need be) and this process may write in it: a cache that cannot be written
    only costs time, so callers skip it instead of failing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def trim_heap() -> None:
    """glibc keeps freed small blocks in its heap; malloc_trim returns them (after a model is closed, RSS falls
    back near the pre-load level instead of staying at the loaded one). A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        pass
