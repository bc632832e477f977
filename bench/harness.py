"""Interleaved measurement: every contender runs the same call in turn, round after round.

Contenders are anything with a ``name`` and a ``call(payload) -> seconds`` (a worker process in
the benchmark, a fake in the tests). The order rotates each round (A B C, B C A, C A B …) so no
contender always runs right after the same neighbour, and slow drifts of a shared machine hit
all of them alike.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence

# Pause before each contender's turn: the runtimes keep their worker threads spinning for a while
# after a call (OpenMP in torch up to 200 ms, TBB in OpenVINO, onnxruntime's pool), which on 2 shared
# cores slowed the next contender's first calls by up to 2× (a 10 ms query measured 15–25 ms).
SETTLE_S = 0.5


class Runner(Protocol):
    name: str

    def call(self, payload: dict) -> float:
        """Run the workload once and return its wall time in seconds."""
        ...


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The contenders' order in round ``round_index``: rotated by one each round."""
    shift = round_index % len(names) if names else 0
    return list(names[shift:]) + list(names[:shift])


def warm_up(runners: Sequence[Runner], payload: dict) -> tuple[list[Runner], dict[str, str]]:
    """Call each runner once, untimed; return those that worked and the errors of those that did not."""
    ok, failed = [], {}
    for runner in runners:
        try:
            runner.call(payload)
            ok.append(runner)
        except Exception as exc:  # a contender that cannot run is reported, not fatal to the run
            failed[runner.name] = f"{type(exc).__name__}: {exc}"
    return ok, failed


def settle(seconds: float = SETTLE_S) -> None:
    """Wait until the previous contender's idle threads stop spinning (see SETTLE_S)."""
    time.sleep(seconds)


def interleave(runners: Sequence[Runner], payload: dict, rounds: int, calls_per_round: int = 1,
               on_call=None, pause: Callable[[], None] | None = None,
               failed: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Time ``calls_per_round`` calls of each runner per round, the runners interleaved.

    ``pause`` (the benchmark passes ``settle``) runs before each runner's calls in a round. A runner whose
    call fails (a worker killed for memory, say) leaves the rounds with its error in ``failed`` and no times;
    the others go on.
    """
    by_name = {r.name: r for r in runners}
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for index in range(rounds):
        for name in round_order(list(by_name), index):
            if pause:
                pause()
            try:
                for _ in range(calls_per_round):
                    seconds = by_name[name].call(payload)
                    times[name].append(seconds)
                    if on_call:
                        on_call(name, seconds)
            except Exception as exc:  # a contender that stops working is reported, not fatal to the run
                if failed is not None:
                    failed[name] = f"{type(exc).__name__} in round {index + 1}: {exc}"
                del by_name[name], times[name]
    return times
