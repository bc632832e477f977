"""Medians, spreads and same-run ratios: the numbers the report is made of."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence


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


def round_medians(seconds: Sequence[float], calls_per_round: int = 1) -> list[float]:
    """Each round's median call: ``seconds`` holds the calls round after round, ``calls_per_round`` per round."""
    if calls_per_round < 1 or len(seconds) % calls_per_round:
        raise ValueError(f"{len(seconds)} calls do not make rounds of {calls_per_round}")
    return [statistics.median(seconds[i:i + calls_per_round]) for i in range(0, len(seconds), calls_per_round)]


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], calls_per_round: int = 1) -> float | None:
    """Median over rounds of (numerator's time / denominator's time in the same round); None when the two did not
    run the same rounds.

    The contenders of a round run within a minute of each other, the rounds of a workload over several: on these
    shared 2-core VMs the machine's speed drifts on that scale (one contender's calls 1.6–3.1 s within one run,
    2026-12-04), which a ratio of medians over all rounds takes in and a ratio within each round cancels.
    """
    if len(numerator) != len(denominator) or not numerator:
        return None
    pairs = zip(round_medians(numerator, calls_per_round), round_medians(denominator, calls_per_round))
    return statistics.median(a / b for a, b in pairs)
