"""The UI-facing API: encode_async / rank_async on one worker per model, progress callbacks, cancellation
between batches (nothing partial returned, the model still usable), close() and the context manager."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from granite_rt import CancelToken, Embedder, Reranker
from granite_rt.errors import AlreadyCancelledError, CancelledError, GraniteRTError, ModelClosedError
from torch_blocked import run_without_torch

TEXTS = [f"text number {i} about water, ice and steam " * (1 + i % 5) for i in range(40)]


@pytest.fixture
def embedder(tiny_embedder_folders):
    with Embedder(tiny_embedder_folders["export"], backend="onnx", dtype="fp32") as model:
        yield model


@pytest.fixture
def reranker(tiny_reranker_folders):
    with Reranker(tiny_reranker_folders["export"], backend="onnx", dtype="fp32") as model:
        yield model


class CountingBackend:
    """Wraps a model's backend: counts batches, the most in flight at once, and can sleep per batch."""

    side_by_side = None  # every batch through ``run`` (a latency onnxruntime session would run several on its sibling)

    def __init__(self, model, delay: float = 0.0) -> None:
        self.inner, self.delay = model._loaded.backend, delay
        self.calls, self.in_flight, self.most = 0, 0, 0
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        model._loaded.backend = self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, inputs):
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.delay)
            return self.inner.run(inputs)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_encode_async_equals_encode_and_runs_off_the_event_loop_thread(embedder):
    expected = embedder.encode(TEXTS, batch_size=4)
    counter = CountingBackend(embedder)

    async def main():
        return await embedder.encode_async(TEXTS, batch_size=4), threading.get_ident()

    vectors, loop_thread = asyncio.run(main())
    np.testing.assert_array_equal(vectors, expected)
    assert counter.threads and loop_thread not in counter.threads


def test_async_calls_on_one_model_run_one_at_a_time_in_order(embedder):
    expected = [embedder.encode(TEXTS[i::3], batch_size=2) for i in range(3)]
    counter = CountingBackend(embedder, delay=0.01)

    async def main():
        return await asyncio.gather(*(embedder.encode_async(TEXTS[i::3], batch_size=2) for i in range(3)))

    results = asyncio.run(main())
    assert counter.most == 1  # one model call in flight per model
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_progress_reports_every_batch_sync_and_on_the_loop_thread_async(embedder):
    seen: list[tuple[int, int]] = []
    embedder.encode(TEXTS, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert total >= 10 and seen == [(i, total) for i in range(1, total + 1)]

    async def main():
        calls = []
        loop_thread = threading.get_ident()
        await embedder.encode_async(TEXTS, batch_size=4,
                                    progress=lambda d, t: calls.append((d, t, threading.get_ident() == loop_thread)))
        return calls

    calls = asyncio.run(main())
    assert [(d, t) for d, t, _ in calls] == seen and all(on_loop for *_, on_loop in calls)


def test_a_cancel_token_stops_between_batches_returns_nothing_and_leaves_the_model_usable(embedder):
    expected = embedder.encode(TEXTS, batch_size=2)
    counter = CountingBackend(embedder)
    token = CancelToken()

    def progress(done, total):
        if done == 3:
            token.cancel()

    with pytest.raises(CancelledError, match="cancelled after 3 of 20 batches; no result is returned"):
        embedder.encode(TEXTS, batch_size=2, progress=progress, cancel=token)
    assert counter.calls == 3 and token.cancelled
    np.testing.assert_array_equal(embedder.encode(TEXTS, batch_size=2), expected)
    with pytest.raises(CancelledError, match="after 0 of"):  # an already cancelled token: no work at all
        embedder.encode(TEXTS, batch_size=2, cancel=token)
    assert counter.calls == 3 + 20


def test_a_threading_event_cancels_too(reranker):
    event = threading.Event()
    pairs = [("query", t) for t in TEXTS]
    with pytest.raises(CancelledError):
        reranker.predict(pairs, batch_size=4, progress=lambda d, t: event.set(), cancel=event)
    assert isinstance(CancelledError("x"), GraniteRTError)
    assert reranker.predict(pairs[:2]).shape == (2,)


def test_cancelling_the_awaiting_task_stops_the_worker_promptly_and_the_model_stays_usable(embedder):
    expected = embedder.encode(TEXTS[:5])
    counter = CountingBackend(embedder, delay=0.05)  # 40 batches x 50 ms: 2 s if nothing stopped it

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(embedder.encode_async(TEXTS, batch_size=1, progress=lambda d, t: started.set()))
        await started.wait()
        task.cancel()
        t0 = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_in = time.perf_counter() - t0
        after = await embedder.encode_async(TEXTS[:5])  # queued behind the cancelled call: waits ≤ one batch
        return cancelled_in, time.perf_counter() - t0, after

    cancelled_in, next_done_in, after = asyncio.run(main())
    assert cancelled_in < 0.5 and next_done_in < 1.0
    assert counter.calls < 10  # stopped between batches, not after all 40
    np.testing.assert_array_equal(after, expected)


def test_rank_async_and_predict_async_equal_the_sync_calls(reranker):
    docs = TEXTS[:9]
    expected_rank = reranker.rank("water", docs, top_k=3)
    expected_scores = reranker.predict([("water", d) for d in docs])

    async def main():
        return (await reranker.rank_async("water", docs, top_k=3),
                await reranker.predict_async([("water", d) for d in docs]))

    ranking, scores = asyncio.run(main())
    assert ranking == expected_rank
    np.testing.assert_array_equal(scores, expected_scores)


def test_bad_cancel_and_progress_arguments_and_cancelling_twice_are_one_line_errors(embedder):
    token = CancelToken()
    token.cancel()
    with pytest.raises(AlreadyCancelledError, match="already cancelled; make a new CancelToken per job") as twice:
        token.cancel()
    with pytest.raises(TypeError, match="cancel must be a granite_rt.CancelToken or a threading.Event, got bool"):
        embedder.encode(TEXTS, cancel=True)
    with pytest.raises(TypeError, match="progress must be a callable"):
        embedder.encode(TEXTS, progress=3)
    with pytest.raises(TypeError, match="progress must be a callable"):
        asyncio.run(embedder.encode_async(TEXTS, progress="bar"))
    with pytest.raises(ValueError, match="threads must be None .* or an int >= 1, got 0"):
        Embedder(embedder.spec.folder, threads=0)
    assert "\n" not in str(twice.value)


def test_close_releases_the_session_and_later_calls_say_so(tiny_embedder_folders):
    model = Embedder(tiny_embedder_folders["export"], backend="onnx", dtype="fp32")
    assert model.encode("x").shape == (64,)
    model.close()
    model.close()  # closing again is harmless
    assert model.closed and model._model is None
    for call in (lambda: model.encode("x"), lambda: asyncio.run(model.encode_async("x")),
                 lambda: model.tokenizer):
        with pytest.raises(ModelClosedError, match="this Embedder is closed .*load the model again"):
            call()
    with Embedder(tiny_embedder_folders["export"]) as scoped:
        scoped.encode("y")
    assert scoped.closed


def test_close_cancels_a_running_async_call_and_waits_for_it(tiny_embedder_folders):
    model = Embedder(tiny_embedder_folders["export"], backend="onnx", dtype="fp32")
    counter = CountingBackend(model, delay=0.05)

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(model.encode_async(TEXTS, batch_size=1, progress=lambda d, t: started.set()))
        await started.wait()
        await asyncio.to_thread(model.close)  # as a window's close handler would, off the loop
        with pytest.raises(CancelledError):
            await task

    asyncio.run(main())
    assert counter.calls < 10 and counter.in_flight == 0 and model.closed


def test_close_returns_the_memory_of_a_model(minilm_folders):
    """RSS after close() falls back near the pre-load level (MiniLM fp32: the weights alone are 90 MB)."""
    code = f"""
import gc, json, os
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
from granite_rt import Embedder
texts = ["a sentence about the weather, " * 20] * 64
with Embedder({str(minilm_folders["export"])!r}, backend="onnx", dtype="fp32") as warm:  # libraries, one-time state
    warm.encode(texts)
figures = []
for _ in range(2):
    before = rss()
    model = Embedder({str(minilm_folders["export"])!r}, backend="onnx", dtype="fp32")
    model.encode(texts)
    loaded = rss()
    model.close()
    figures.append((before, loaded, rss()))
print(json.dumps(figures))
"""
    figures = json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])
    for before, loaded, closed in figures:
        assert loaded - before > 80, figures  # the model really was resident
        assert closed - before < 0.15 * (loaded - before), figures
    print("\nRSS MB before/loaded/closed:", figures)
