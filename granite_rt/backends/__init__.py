"""The backend registry: every ``BackendType`` the planner may choose, in the order it prefers them.

``register`` adds one (a new engine is its own module plus one ``register`` call); ``get`` and
``registered`` are what ``granite_rt.devices`` and ``granite_rt.model_folder`` read. Importing this
package imports no engine: each backend module imports its engine when a model is opened.
"""

from __future__ import annotations

from pathlib import Path

from granite_rt import host
from granite_rt.backends.base import (KNOWN_INPUTS, OUTPUT_NAMES, Artifact, Backend, BackendType, EngineInventory,
                                      PlanContext, Placement, pick_output)
from granite_rt.backends.onnxruntime import ONNXRUNTIME
from granite_rt.backends.openvino import OPENVINO
from granite_rt.errors import BackendUnavailableError

__all__ = ["Artifact", "Backend", "BackendType", "EngineInventory", "PlanContext", "Placement", "KNOWN_INPUTS",
           "OUTPUT_NAMES", "get", "open_backend", "pick_output", "register", "registered", "unregister"]

# OpenVINO first: on CPUs with int8 dot products its INT8 is the fastest CPU path (``devices`` reorders the
# CPU where there are none); every other device has one backend.
_REGISTRY: dict[str, BackendType] = {OPENVINO.name: OPENVINO, ONNXRUNTIME.name: ONNXRUNTIME}


def register(backend: BackendType, *, first: bool = False) -> None:
    """Make ``backend`` selectable (backend=its name, and device="auto" where it drives the device):
    after the registered ones, or before them with ``first``. Re-registering a name replaces it."""
    if not getattr(backend, "name", None):
        raise ValueError(f"{backend!r} has no name")
    _REGISTRY.pop(backend.name, None)
    if first:
        rest = dict(_REGISTRY)
        _REGISTRY.clear()
        _REGISTRY[backend.name] = backend
        _REGISTRY.update(rest)
    else:
        _REGISTRY[backend.name] = backend


def unregister(name: str) -> None:
    """Remove a registered backend (tests, plugins that unload)."""
    _REGISTRY.pop(name, None)


def registered() -> tuple[BackendType, ...]:
    """The registered backends, preferred first."""
    return tuple(_REGISTRY.values())


def get(name: str) -> BackendType:
    """The registered backend called ``name`` (BackendUnavailableError naming the registered ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}; registered: {', '.join(_REGISTRY)}") from None


def open_backend(folder: Path, placement: Placement, *, threads: int | None = None) -> Backend:
    """Compile ``placement`` on its backend with ``threads`` (default: the physical cores).

    Files are not checked here: ``devices.open_verified`` checks them first (ModelFileError naming the file).
    """
    backend = get(placement.backend)
    try:
        return backend.open(Path(folder), placement, threads or host.physical_cores())
    except ImportError as exc:
        raise BackendUnavailableError(f"{backend.engine} is not installed ({exc}); {backend.install}") from exc
