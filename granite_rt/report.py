"""The ``granite-rt info [MODEL]`` text: what is installed, and what each device would run and why
(``info_data``: the same as a dict, for ``--json``)."""

from __future__ import annotations

import dataclasses
import platform
from typing import Any
import warnings

from granite_rt import backends, devices, host
from granite_rt.backends.onnxruntime import OnnxRuntimeConflictWarning
from granite_rt.devices import AUTO_ORDER, Inventory, known_devices, label, probe, select_placements
from granite_rt.errors import GraniteRTError, one_line
from granite_rt.model_folder import load_spec, resolve_model, verification


def info_report(model: str | None = None, *, backend: str = "auto", dtype: str = "auto",
                inventory: Inventory | None = None) -> str:
    """Engines, devices (available or why not) and, for ``model``, the placement per device and auto's pick."""
    inv = inventory or probe(full=True)
    lines = [f"granite-rt on {platform.system()} {platform.machine()}, Python {platform.python_version()}"]
    lines += [b.engine_line(inv.engine(b.name)) for b in backends.registered()]
    lines.append(f"cache dir: {host.cache_dir() or 'off (GRANITE_RT_CACHE=off)'}")
    lines += [f"WARNING: {message}" for b in backends.registered() if (message := b.conflict(inv.engine(b.name)))]
    lines += ["", "devices (auto order: " + " > ".join(AUTO_ORDER) + "; npu only when asked for):"]
    for device in known_devices():
        for name in devices.backends_for(device, "auto", inv):
            provider = backends.get(name).devices[device]
            status = "available" if inv.present(name, device) else "absent: " + inv.absent_reason(name, device)
            lines.append(f"  {device:<10} {name:<9} {provider:<26} {status}")
    if model is not None:
        lines += [""] + _model_lines(model, backend, dtype, inv)
    return "\n".join(lines)


def info_data(model: str | None = None) -> dict[str, Any]:
    """``info --json``: the full inventory, and for ``model`` its artifacts and the placements device='auto' tries."""
    inventory = probe(full=True)
    report: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                              "inventory": dataclasses.asdict(inventory)}
    if model is not None:
        spec = load_spec(resolve_model(model))
        placements = select_placements(spec.artifacts, folder=spec.folder, kind=spec.kind, inventory=inventory)
        report["model"] = {"folder": str(spec.folder), "kind": spec.kind, "max_length": spec.max_length,
                           "dim": spec.dim, "artifacts": [dataclasses.asdict(a) for a in spec.artifacts],
                           "auto_placements": [dataclasses.asdict(p) for p in placements]}
    return report


def _model_lines(model: str, backend: str, dtype: str, inv: Inventory) -> list[str]:
    """Per device: backend, dtype, file and why for MODEL; then what device='auto' picks."""
    try:
        spec = load_spec(resolve_model(model, backend, dtype))
    except Exception as exc:  # noqa: BLE001 - the report names the problem instead of failing as a whole
        return [f"model {model}: cannot be read: {type(exc).__name__}: {one_line(exc, 300)}"]
    if spec.kind == "embedder":   # what a default (workload="latency") load plans with
        inv = inv.for_queries()
    lines = [f"model {spec.folder} ({spec.kind}), model files:"]
    lines += [f"  {a.path:<46} {a.backend:<9} {a.precision}" for a in spec.artifacts]
    lines.append(f"  {'device':<10} {'backend':<9} {'dtype':<9} {'file':<46} why")
    for device in known_devices():
        for name in devices.backends_for(device, backend, inv):
            try:
                chosen = devices.choose(spec.artifacts, name, device, dtype, inv)
            except GraniteRTError as exc:
                chosen, note = None, one_line(exc, 300)
            else:
                has_backend = any(a.backend == name for a in spec.artifacts)
                note = f"no {name} file runs at dtype={dtype}" if has_backend else f"the folder has no {name} file"
            if chosen is None:
                lines.append(f"  {device:<10} {name:<9} {'-':<9} {'-':<46} {note}")
                continue
            dt, artifact, why = chosen
            if not inv.present(name, device):
                why = f"{why} (device absent here)"
            lines.append(f"  {device:<10} {name:<9} {dt:<9} {artifact.path:<46} {why}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxRuntimeConflictWarning)
            placements = select_placements(spec.artifacts, backend, "auto", dtype, folder=spec.folder, kind=spec.kind,
                                              inventory=inv)
    except (GraniteRTError, ValueError) as exc:
        lines.append(f"device='auto' cannot run it: {one_line(exc, 300)}")
    else:
        lines.append(f"device='auto' runs {label(placements[0])}"
                     + (f"; falls back to {', '.join(label(p) for p in placements[1:])}" if placements[1:] else ""))
        lines.append(f"its files are checked at load: {verification(spec.folder, placements[0].artifact)}")
    return lines
