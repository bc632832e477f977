"""The dynamic batcher on a fake model: coalescing, token budget, keys, limits and failures.

The fake model records every call, so the tests see exactly how requests were grouped; the
end-to-end tests in test_server.py run the same batcher on the real runtime over HTTP.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from granite_rt.server.batcher import (BatcherConfig, BatcherStoppedError, DynamicBatcher, QueueFullError,
                                       RequestTimeoutError)
from granite_rt.server.metrics import Metrics


class FakeModel:
    """Doubles numbers; ``gate`` holds the first call until released; "bad" items raise."""

    def __init__(self, block_first: bool = False, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[object, list]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self.delay_s = delay_s
        if not block_first:
            self.gate.set()

    def __call__(self, key, items):
        self.calls.append((key, list(items)))
        self.started.set()
        self.gate.wait(10)
        time.sleep(self.delay_s)
        if "bad" in items:
            raise ValueError("the fake model cannot take 'bad'")
        return [item * 2 for item in items]


def run_batcher(model: FakeModel, config: BatcherConfig, scenario):
    """Run ``scenario(batcher)`` on an event loop with a started batcher; stop it afterwards."""
    batcher = DynamicBatcher("fake", model, config, Metrics())
    batcher.start()
    try:
        return asyncio.run(scenario(batcher))
    finally:
        batcher.stop(timeout_s=10)


async def _wait_started(model: FakeModel) -> None:
    while not model.started.is_set():
        await asyncio.sleep(0.001)


def test_concurrent_requests_are_coalesced_and_answered_individually():
    model = FakeModel(block_first=True)

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit("k", [1000], [1]))
        await _wait_started(model)            # the worker is busy: the next 20 requests queue up
        rest = [asyncio.create_task(batcher.submit("k", [i, i + 100], [1, 1])) for i in range(20)]
        await asyncio.sleep(0.05)
        model.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = run_batcher(model, BatcherConfig(max_batch_tokens=1000, max_wait_s=0.01), scenario)
    assert first == [2000]
    assert rest == [[2 * i, 2 * (i + 100)] for i in range(20)]
    assert len(model.calls) == 2              # the first alone, then the 20 queued ones together
    assert len(model.calls[1][1]) == 40


def test_token_budget_caps_each_call_and_a_large_request_runs_alone():
    model = FakeModel(block_first=True)

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit("k", [0], [1]))
        await _wait_started(model)
        small = [asyncio.create_task(batcher.submit("k", [i], [30])) for i in range(1, 10)]
        large = asyncio.create_task(batcher.submit("k", [99], [500]))
        await asyncio.sleep(0.05)
        model.gate.set()
        return await asyncio.gather(first, *small, large)

    results = run_batcher(model, BatcherConfig(max_batch_tokens=100, max_wait_s=0.0), scenario)
    assert results == [[0]] + [[2 * i] for i in range(1, 10)] + [[198]]
    sizes = [len(items) for _, items in model.calls[1:]]
    assert sizes == [3, 3, 3, 1]              # 3 x 30 tokens fit in 100; the 500-token request alone
    assert model.calls[-1][1] == [99]


def test_requests_with_different_options_never_share_a_call():
    model = FakeModel(block_first=True)

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit("a", [0], [1]))
        await _wait_started(model)
        tasks = [asyncio.create_task(batcher.submit("ab"[i % 2], [i], [1])) for i in range(1, 9)]
        await asyncio.sleep(0.05)
        model.gate.set()
        return await asyncio.gather(first, *tasks)

    results = run_batcher(model, BatcherConfig(max_wait_s=0.0), scenario)
    assert results == [[2 * i] for i in range(9)]
    for key, items in model.calls:
        assert all("ab"[i % 2] == key for i in items if i), (key, items)
    assert sorted(len(items) for _, items in model.calls[1:]) == [4, 4]


def test_full_queue_is_refused_with_a_retry_hint():
    model = FakeModel(block_first=True)

    async def admitted(batcher, i):
        with batcher.admit():
            return await batcher.submit("k", [i], [1])

    async def scenario(batcher):
        tasks = [asyncio.create_task(admitted(batcher, i)) for i in range(3)]
        await _wait_started(model)
        with pytest.raises(QueueFullError) as refused:
            with batcher.admit():
                await batcher.submit("k", [9], [1])
        model.gate.set()
        return refused.value, await asyncio.gather(*tasks)

    refused, results = run_batcher(model, BatcherConfig(max_pending=3), scenario)
    assert refused.retry_after_s >= 1
    assert results == [[0], [2], [4]]
    assert all(9 not in items for _, items in model.calls)


def test_timed_out_requests_are_answered_and_a_queued_one_never_runs():
    model = FakeModel(block_first=True)

    async def scenario(batcher):
        running = asyncio.create_task(batcher.submit("k", [1], [1]))
        await _wait_started(model)
        queued = asyncio.create_task(batcher.submit("k", [7], [1]))
        outcome = await asyncio.gather(running, queued, return_exceptions=True)
        model.gate.set()
        return outcome

    outcome = run_batcher(model, BatcherConfig(request_timeout_s=0.1), scenario)
    assert all(isinstance(o, RequestTimeoutError) and "within 0.1 s" in str(o) for o in outcome)
    assert [items for _, items in model.calls] == [[1]]   # the queued request was dropped


def test_a_failing_request_does_not_fail_the_requests_batched_with_it():
    model = FakeModel(block_first=True)

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit("k", ["x"], [1]))
        await _wait_started(model)
        good = asyncio.create_task(batcher.submit("k", ["a"], [1]))
        bad = asyncio.create_task(batcher.submit("k", ["bad"], [1]))
        also_good = asyncio.create_task(batcher.submit("k", ["c"], [1]))
        await asyncio.sleep(0.05)
        model.gate.set()
        return await asyncio.gather(first, good, bad, also_good, return_exceptions=True)

    first, good, bad, also_good = run_batcher(model, BatcherConfig(), scenario)
    assert (first, good, also_good) == (["xx"], ["aa"], ["cc"])
    assert isinstance(bad, ValueError) and "bad" in str(bad)
    assert ["a", "bad", "c"] in [items for _, items in model.calls]   # tried together first


def test_stop_finishes_queued_requests_and_refuses_new_ones():
    model = FakeModel(block_first=True)
    batcher = DynamicBatcher("fake", model, BatcherConfig(), Metrics())
    batcher.start()

    async def scenario():
        tasks = [asyncio.create_task(batcher.submit("k", [i], [1])) for i in range(5)]
        await _wait_started(model)
        stopper = asyncio.get_running_loop().run_in_executor(None, batcher.stop, 10)
        await asyncio.sleep(0.05)
        with pytest.raises(BatcherStoppedError):
            await batcher.submit("k", [9], [1])
        model.gate.set()
        await stopper
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == [[2 * i] for i in range(5)]
    assert not any(t.name == "granite-rt-fake" for t in threading.enumerate())


def test_metrics_record_batches_and_render_prometheus_text():
    metrics = Metrics()
    batcher = DynamicBatcher("fake", FakeModel(), BatcherConfig(), metrics)
    batcher.start()

    async def scenario():
        return await asyncio.gather(*(batcher.submit("k", [i, i], [2, 3]) for i in range(4)))

    try:
        asyncio.run(scenario())
    finally:
        batcher.stop(10)
    labels = (("model", "fake"),)
    assert metrics.get("granite_rt_inputs_total", labels) == 8
    assert metrics.get("granite_rt_tokens_total", labels) == 20
    text = metrics.render()
    assert "# TYPE granite_rt_batch_size histogram" in text
    assert 'granite_rt_batch_size_bucket{model="fake",le="+Inf"} ' in text
    assert 'granite_rt_inputs_total{model="fake"} 8' in text
    assert 'granite_rt_queue_depth{model="fake"} 0' in text


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BatcherConfig(max_batch_tokens=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        BatcherConfig(max_wait_s=-1)


def test_a_cancelled_request_is_withdrawn_before_it_reaches_the_model():
    model = FakeModel(block_first=True)
    metrics = Metrics()
    batcher = DynamicBatcher("fake", model, BatcherConfig(max_wait_s=0.0), metrics)
    batcher.start()

    async def scenario():
        running = asyncio.create_task(batcher.submit("k", [1], [1]))
        await _wait_started(model)
        left = asyncio.create_task(batcher.submit("k", [7], [1]))     # its client will leave
        stays = asyncio.create_task(batcher.submit("k", [8], [1]))
        await asyncio.sleep(0.02)
        left.cancel()
        model.gate.set()
        return await running, await stays, await asyncio.gather(left, return_exceptions=True)

    try:
        running, stays, (left,) = asyncio.run(scenario())
    finally:
        batcher.stop(10)
    assert (running, stays) == ([2], [16]) and isinstance(left, asyncio.CancelledError)
    assert [items for _, items in model.calls] == [[1], [8]]          # 7 never reached the model
    assert metrics.get("granite_rt_requests_dropped_total", (("model", "fake"),)) == 1
    assert metrics.get("granite_rt_inputs_total", (("model", "fake"),)) == 2


def test_a_request_over_the_budget_runs_in_budget_sized_calls_and_stops_when_its_client_leaves():
    model = FakeModel(delay_s=0.05)
    metrics = Metrics()
    config = BatcherConfig(max_batch_tokens=100, max_wait_s=0.0)

    counts = [10, 60, 30, 90, 20, 50, 40, 70, 80, 100]

    async def whole(batcher):
        return await batcher.submit("k", list(range(10)), counts)

    result = run_batcher(model, config, whole)
    assert result == [2 * i for i in range(10)]                        # input order, whatever the parts
    assert [sum(counts[i] for i in items) for _, items in model.calls] == [100, 90, 80, 70, 60, 90, 60]
    assert sorted(i for _, items in model.calls for i in items) == list(range(10))
    assert model.calls[0][1] == [9]                                    # longest first (100 tokens alone)

    model = FakeModel(delay_s=0.05)
    batcher = DynamicBatcher("fake", model, config, metrics)
    batcher.start()

    async def leaves():
        task = asyncio.create_task(batcher.submit("k", list(range(10)), [100] * 10))
        await _wait_started(model)
        task.cancel()
        await asyncio.sleep(0.3)                                       # the worker reaches its next part

    try:
        asyncio.run(leaves())
    finally:
        batcher.stop(10)
    assert len(model.calls) <= 2, model.calls                          # not ten calls for nobody
    assert metrics.get("granite_rt_requests_dropped_total", (("model", "fake"),)) == 1
