"""Work off the UI thread: cancel tokens, progress callbacks and the one worker thread per model behind
``Embedder.encode_async`` / ``Reranker.rank_async``.

A call is cancelled *between batches* (the batch in flight finishes, ≤ one batch of latency) and then
raises ``CancelledError``: nothing partial is ever returned as complete, and the model stays usable.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Protocol

from granite_rt.errors import AlreadyCancelledError, CancelledError, ModelClosedError

if TYPE_CHECKING:
    import asyncio

Progress = Callable[[int, int], None]


class Cancellable(Protocol):
    """What ``cancel=`` takes: a ``CancelToken`` or a ``threading.Event`` (anything with ``is_set()``)."""

    def is_set(self) -> bool: ...


class CancelToken:
    """Cancels the calls it is passed to (``encode(..., cancel=token)``) before their next batch.

    ``cancel()`` once; a second ``cancel()`` raises AlreadyCancelledError (a UI that cancels twice has
    lost track of its job). A token may be shared by several calls; a call given a token that is
    already cancelled raises CancelledError before doing any work.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        if self._event.is_set():
            raise AlreadyCancelledError("this CancelToken was already cancelled; make a new CancelToken per job")
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"


class _AnyOf:
    """Set when any of the given cancellables is set (the caller's token and the async task's own)."""

    def __init__(self, *tokens: Cancellable | None) -> None:
        self.tokens = tuple(t for t in tokens if t is not None)

    def is_set(self) -> bool:
        return any(t.is_set() for t in self.tokens)


def check_cancel(cancel: Any) -> Cancellable | None:
    """None, or an object with ``is_set()``; anything else is a TypeError naming the argument."""
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(f"cancel must be a granite_rt.CancelToken or a threading.Event, got {type(cancel).__name__}")
    return cancel


def check_progress(progress: Any) -> Progress | None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable (done, total), got {type(progress).__name__}")
    return progress


def raise_if_cancelled(cancel: Cancellable | None, done: int, total: int) -> None:
    """Between batches: CancelledError when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"cancelled after {done} of {total} batches; no result is returned")


class Worker:
    """The one thread that runs a model's async calls, one at a time, in the order they were awaited.

    One model call in flight per model: a second ``encode_async`` waits for the first (the backend
    already uses every thread it was given for one batch).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._stops: set[threading.Event] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _submit(self, call: Callable[..., Any], stop: threading.Event, **kwargs: Any) -> Future:
        with self._lock:
            if self._closed:
                raise ModelClosedError(f"{self._name} is closed; load the model again")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"granite-rt-{self._name}")
            self._stops.add(stop)
            future = self._executor.submit(call, **kwargs)
        future.add_done_callback(lambda _: self._stops.discard(stop))
        return future

    async def run(self, call: Callable[..., Any], *, progress: Progress | None = None,
                  cancel: Cancellable | None = None, **kwargs: Any) -> Any:
        """``call(progress=..., cancel=..., **kwargs)`` on the worker thread.

        ``progress(done, total)`` is called on the event loop's thread (safe to touch UI state bound
        to the loop). Cancelling the awaiting task, or setting ``cancel``, stops the call before its
        next batch: the task raises asyncio.CancelledError (resp. granite_rt CancelledError).
        """
        import asyncio  # here, not at import: ~30 ms of a cold start, and a caller awaiting this has it loaded

        loop = asyncio.get_running_loop()
        check_progress(progress)
        stop = threading.Event()
        report = None if progress is None else _on_loop(loop, progress)
        future = self._submit(call, stop, progress=report, cancel=_AnyOf(check_cancel(cancel), stop), **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            stop.set()  # the worker stops before its next batch; the model stays usable
            raise

    def close(self) -> None:
        """Cancel queued and running calls, wait for the worker to stop; later calls raise ModelClosedError."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            for stop in list(self._stops):
                stop.set()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _on_loop(loop: asyncio.AbstractEventLoop, progress: Progress) -> Progress:
    def report(done: int, total: int) -> None:
        try:
            loop.call_soon_threadsafe(progress, done, total)
        except RuntimeError:  # the loop is closed: nobody is waiting for the result any more
            pass
    return report
