"""Server metrics in the Prometheus text exposition format (version 0.0.4).

Written by hand rather than with prometheus_client: ten families of counters, gauges and
histograms are a few dozen lines, and the server keeps its only dependencies starlette + uvicorn.
Updated from the event loop and the worker threads, hence the lock.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16_384, 65_536, 262_144)

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)   # per bucket, not cumulative
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.bounds):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: Labels) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(self.bounds, self.counts or [0] * len(self.bounds)):
            cumulative += count
            out.append(f"{name}_bucket{_fmt(labels + (('le', _num(bound)),))} {cumulative}")
        out.append(f"{name}_bucket{_fmt(labels + (('le', '+Inf'),))} {self.n}")
        out.append(f"{name}_sum{_fmt(labels)} {_num(self.total)}")
        out.append(f"{name}_count{_fmt(labels)} {self.n}")
        return out


@dataclass(frozen=True)
class _Family:
    name: str
    kind: str           # counter | gauge | histogram
    help: str
    bounds: tuple[float, ...] = ()


_FAMILIES = {
    f.name: f for f in (
        _Family("granite_rt_requests_total", "counter", "HTTP requests answered, by endpoint and status."),
        _Family("granite_rt_request_duration_seconds", "histogram",
                "Time from request to response, by endpoint.", LATENCY_BUCKETS),
        _Family("granite_rt_requests_in_flight", "gauge", "HTTP requests being handled now."),
        _Family("granite_rt_queue_depth", "gauge", "Requests waiting for the model, by model."),
        _Family("granite_rt_requests_dropped_total", "counter",
                "Requests whose client left (or that timed out) before the model ran them, by model."),
        _Family("granite_rt_inputs_total", "counter", "Texts or pairs run through the model, by model."),
        _Family("granite_rt_tokens_total", "counter", "Tokens run through the model, by model."),
        _Family("granite_rt_batch_size", "histogram", "Inputs per model call, by model.", SIZE_BUCKETS),
        _Family("granite_rt_batch_tokens", "histogram", "Tokens per model call, by model.", TOKEN_BUCKETS),
        _Family("granite_rt_batch_duration_seconds", "histogram", "Duration of one model call, by model.",
                LATENCY_BUCKETS),
    )
}


class Metrics:
    """Counters, gauges and histograms keyed by family and labels; ``render`` writes the text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float | _Histogram]] = {name: {} for name in _FAMILIES}

    def inc(self, family: str, labels: Labels = (), amount: float = 1) -> None:
        with self._lock:
            series = self._values[family]
            series[labels] = series.get(labels, 0) + amount

    def set(self, family: str, labels: Labels, value: float) -> None:
        with self._lock:
            self._values[family][labels] = value

    def observe(self, family: str, labels: Labels, value: float) -> None:
        with self._lock:
            series = self._values[family]
            hist = series.get(labels)
            if hist is None:
                hist = series[labels] = _Histogram(_FAMILIES[family].bounds)
            hist.observe(value)

    def get(self, family: str, labels: Labels = ()) -> float:
        """Current value of a counter or gauge (0 when never set); a histogram's count."""
        with self._lock:
            value = self._values[family].get(labels, 0)
            return value.n if isinstance(value, _Histogram) else value

    def set_queue_depth(self, model: str, depth: int) -> None:
        self.set("granite_rt_queue_depth", (("model", model),), depth)

    def observe_batch(self, model: str, inputs: int, tokens: int, seconds: float) -> None:
        labels = (("model", model),)
        self.inc("granite_rt_inputs_total", labels, inputs)
        self.inc("granite_rt_tokens_total", labels, tokens)
        self.observe("granite_rt_batch_size", labels, inputs)
        self.observe("granite_rt_batch_tokens", labels, tokens)
        self.observe("granite_rt_batch_duration_seconds", labels, seconds)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.inc("granite_rt_requests_total", (("endpoint", endpoint), ("status", str(status))))
        self.observe("granite_rt_request_duration_seconds", (("endpoint", endpoint),), seconds)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            for name, family in _FAMILIES.items():
                out.append(f"# HELP {name} {family.help}")
                out.append(f"# TYPE {name} {family.kind}")
                for labels, value in sorted(self._values[name].items()):
                    if isinstance(value, _Histogram):
                        out += value.lines(name, labels)
                    else:
                        out.append(f"{name}{_fmt(labels)} {_num(value)}")
        return "\n".join(out) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
