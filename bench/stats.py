"""Medians, spreads and same-run ratios: the numbers the report is made of."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Seconds of one contender on one workload: median over the measured calls, and the spread."""

    median: float
    min: float
    max: float
    n: int


def summarize(seconds: list[float]) -> Summary:
    """Median, min and max of measured times (warm-up calls are never passed in)."""
    if not seconds:
        raise ValueError("no measurements to summarize")
    return Summary(statistics.median(seconds), min(seconds), max(seconds), len(seconds))


def time_ratios(medians: dict[str, float]) -> dict[str, dict[str, float]]:
    """ratio[a][b] = median time of a / median time of b (below 1: a is faster than b)."""
    return {a: {b: ta / tb for b, tb in medians.items() if b != a} for a, ta in medians.items()}
