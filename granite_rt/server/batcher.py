"""Dynamic batching: coalesce concurrent requests into one model call, answer each one alone.

Requests are admitted (``admit``: at most ``max_pending`` at once, else ``QueueFullError``) and
queued from the event loop; one worker thread per model takes the oldest request and every queued
request with the same options (``key``) that fits the token budget, waiting at most ``max_wait_s``
for company, runs the model once and hands each request its own rows back. A request larger than
the budget runs alone, in budget-sized calls. The model call runs outside the GIL (onnxruntime /
OpenVINO), so the event loop stays responsive. A request whose waiter is gone (cancelled: its
client disconnected; or timed out) is skipped while queued and stops between the calls of a
large request, so no model time is spent on answers nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

from ..errors import GraniteRTError
from .metrics import Metrics

# run(key, items) -> one result per item, in order (e.g. the rows of an embedding matrix).
RunFn = Callable[[Hashable, list], Sequence[Any]]


class QueueFullError(GraniteRTError):
    """The server holds as many requests as it admits; the client should retry later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests in flight; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class RequestTimeoutError(GraniteRTError, TimeoutError):
    """A request was not answered within the server's per-request timeout."""


class BatcherStoppedError(GraniteRTError):
    """The batcher is shutting down and takes no new requests."""


@dataclass(frozen=True)
class BatcherConfig:
    """How requests are coalesced and how many are admitted."""

    max_batch_tokens: int = 16_384      # token budget of one model call (a lone larger request runs alone)
    max_wait_s: float = 0.002           # how long the first request of a batch waits for company
    max_pending: int = 512              # requests admitted at once (queued or running); beyond: 429
    request_timeout_s: float = 30.0     # queueing + compute; beyond: 503

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_wait_s", "request_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(eq=False)
class _Job:
    key: Hashable
    items: list
    counts: Sequence[int]           # tokens per item
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def tokens(self) -> int:
        return sum(self.counts)

    @property
    def gone(self) -> bool:
        """Nobody waits for the answer any more (cancelled or timed out)."""
        return self.future.done()

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the waiting coroutine (from any thread)."""
        if self.future.done():
            return
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:
            pass  # the event loop is closed: nobody waits for this answer any more


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # timed out or cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DynamicBatcher:
    """One model, one worker thread, one queue; ``submit`` from the event loop."""

    def __init__(self, name: str, run: RunFn, config: BatcherConfig, metrics: Metrics) -> None:
        self.name = name
        self._run = run
        self.config = config
        self._metrics = metrics
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._stopping = False
        self._latency_s = 0.0           # moving averages of one model call's duration and
        self._jobs_per_call = 1.0       # number of requests, for Retry-After
        self._thread = threading.Thread(target=self._work, name=f"granite-rt-{name}", daemon=True)

    @property
    def alive(self) -> bool:
        """The worker thread runs and takes requests."""
        return self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_pending`` places for a request (from its arrival to its answer), or refuse.

        Called from the event loop before the request's body is read, so a refused request costs nothing."""
        if self._stopping:
            raise BatcherStoppedError("the server is shutting down")
        if self._pending >= self.config.max_pending:
            raise QueueFullError(self.retry_after_s())
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def submit(self, key: Hashable, items: list, counts: Sequence[int]) -> list:
        """Queue ``items`` (one request; ``counts``: tokens per item) and return their results, in order.

        Cancelling the awaiting task (the client left) takes the request out of the queue."""
        if self._stopping:
            raise BatcherStoppedError("the server is shutting down")
        if len(counts) != len(items):
            raise ValueError(f"{len(items)} items but {len(counts)} token counts")
        loop = asyncio.get_running_loop()
        job = _Job(key, items, counts, loop.create_future(), loop)
        with self._cond:
            self._queue.append(job)
            self._metrics.set_queue_depth(self.name, len(self._queue))
            self._cond.notify()
        try:
            return await asyncio.wait_for(job.future, self.config.request_timeout_s or None)
        except asyncio.TimeoutError:
            self._drop(job)
            raise RequestTimeoutError(f"request not answered within {self.config.request_timeout_s:g} s") from None
        except asyncio.CancelledError:
            self._drop(job)
            raise

    def retry_after_s(self) -> int:
        """Seconds after which a rejected client may expect room: the queue's drain time."""
        calls_ahead = math.ceil(max(1, self._pending) / self._jobs_per_call)
        return max(1, math.ceil(self._latency_s * calls_ahead))

    def _drop(self, job: _Job) -> None:
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # already taken into a batch: the worker sees it is gone
            self._metrics.set_queue_depth(self.name, len(self._queue))
        self._metrics.inc("granite_rt_requests_dropped_total", (("model", self.name),))

    def _take_batch(self) -> list[_Job] | None:
        """The oldest job and the compatible ones behind it that fit the budget; None: stop."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, tokens = [first], first.tokens
            deadline = time.monotonic() + self.config.max_wait_s
            while tokens < self.config.max_batch_tokens:
                fits = self._take_compatible(first.key, self.config.max_batch_tokens - tokens)
                if fits is None:
                    break  # the next compatible job does not fit: the batch is full
                batch += fits
                tokens += sum(job.tokens for job in fits)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                if not fits:
                    self._cond.wait(remaining)
            self._metrics.set_queue_depth(self.name, len(self._queue))
            return batch

    def _take_compatible(self, key: Hashable, budget: int) -> list[_Job] | None:
        """Remove queued jobs with ``key`` in FIFO order while they fit ``budget``.

        Returns None when a compatible job is left behind because it did not fit."""
        taken: list[_Job] = []
        for job in list(self._queue):
            if job.key != key:
                continue
            if job.tokens > budget:
                return taken or None
            self._queue.remove(job)
            taken.append(job)
            budget -= job.tokens
        return taken

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = [job for job in batch if not job.gone]
            if len(live) < len(batch):
                self._metrics.inc("granite_rt_requests_dropped_total", (("model", self.name),), len(batch) - len(live))
            if len(live) == 1 and live[0].tokens > self.config.max_batch_tokens:
                self._execute_in_parts(live[0])
            elif live:
                self._execute(live)

    def _execute(self, jobs: list[_Job]) -> None:
        """Run one model call for ``jobs``; if it fails, run them one by one to isolate the culprit."""
        try:
            results = self._call(jobs[0].key, [item for job in jobs for item in job.items],
                                 sum(job.tokens for job in jobs), len(jobs))
        except Exception as err:  # noqa: BLE001 - handed to the request that caused it
            if len(jobs) > 1:
                for job in jobs:
                    self._execute([job])
            else:
                jobs[0].resolve(error=err)
            return
        offset = 0
        for job in jobs:
            job.resolve(results[offset: offset + len(job.items)])
            offset += len(job.items)

    def _execute_in_parts(self, job: _Job) -> None:
        """A request over the token budget: its items longest first, in calls of at most the budget (one item
        over it alone), so that a client that leaves stops the work at the next call."""
        order = sorted(range(len(job.items)), key=lambda i: -job.counts[i])
        parts: list[list[int]] = [[]]
        used = 0
        for i in order:
            if parts[-1] and used + job.counts[i] > self.config.max_batch_tokens:
                parts.append([])
                used = 0
            parts[-1].append(i)
            used += job.counts[i]
        results: list[Any] = [None] * len(job.items)
        for part in parts:
            if job.gone:
                self._metrics.inc("granite_rt_requests_dropped_total", (("model", self.name),))
                return
            try:
                rows = self._call(job.key, [job.items[i] for i in part], sum(job.counts[i] for i in part), 1)
            except Exception as err:  # noqa: BLE001 - handed to the request
                job.resolve(error=err)
                return
            for i, row in zip(part, rows):
                results[i] = row
        job.resolve(results)

    def _call(self, key: Hashable, items: list, tokens: int, jobs: int) -> Sequence[Any]:
        """One model call, timed and recorded."""
        start = time.perf_counter()
        results = self._run(key, items)
        elapsed = time.perf_counter() - start
        self._latency_s = elapsed if self._latency_s == 0 else 0.8 * self._latency_s + 0.2 * elapsed
        self._jobs_per_call = 0.8 * self._jobs_per_call + 0.2 * jobs
        self._metrics.observe_batch(self.name, len(items), tokens, elapsed)
        return results
