"""A loaded model: folder resolved, spec read, tokenizer and backend opened once — shared by Embedder and Reranker."""

from __future__ import annotations

import gc
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from granite_rt import devices, host
from granite_rt import tune as tuning
from granite_rt.arguments import is_int
from granite_rt.background import Cancellable, Progress, Worker, check_cancel, check_progress, raise_if_cancelled
from granite_rt.backends.base import SideBySide
from granite_rt.batching import ShapeBuckets, batch_overhead_tokens, map_batches
from granite_rt.bundle import check_complete, explain_missing
from granite_rt.errors import GraniteRTError, ModelClosedError, WrongKindError
from granite_rt.model_folder import Kind, ModelSpec, artifact_files, load_spec, resolve_model, verification
from granite_rt.tokenize import Tokenizer

_CLASS = {"embedder": "Embedder", "reranker": "Reranker"}
_ARTICLE = {"embedder": "an", "reranker": "a"}


class LoadedModel:
    """Spec + tokenizer + backend of one model; ``run`` maps a function over length-sorted padded batches."""

    def __init__(self, model: str | os.PathLike, kind: Kind, *, backend: str = "auto", device: str | list = "auto",
                 dtype: str = "auto", threads: int | None = None, allow_fallback: bool | None = None,
                 revision: str | None = None, workload: str = "latency", tune: bool = False) -> None:
        check_threads(threads)
        folder = resolve_model(model, backend=backend, dtype=dtype, revision=revision)
        self.spec: ModelSpec = load_spec(folder)
        check_complete(self.spec)
        if self.spec.kind != kind:
            raise WrongKindError(f"{model} is {_ARTICLE[self.spec.kind]} {self.spec.kind}; load it with granite_rt."
                                 f"{_CLASS[self.spec.kind]}, not {_CLASS[kind]}", str(model), self.spec.kind)
        # threads=N caps tokenization too: the tokenizers library's batch encoding runs on one thread per
        # logical CPU, so with a cap it encodes on the calling thread (see Tokenizer).
        self.tokenizer = Tokenizer.for_spec(folder, self.spec, parallel=threads is None)
        tuned = _measured_choice(folder, self.spec, backend, device, dtype, tune=tune, threads=threads,
                                 workload=workload)
        try:
            self.backend, selection = devices.open_best(folder, self.spec.artifacts, backend, device, dtype,
                                                        allow_fallback=allow_fallback, threads=threads,
                                                        workload=workload, kind=kind, tuned=tuned)
        except GraniteRTError as exc:
            explained = explain_missing(exc, self.spec, backend, dtype)  # a bundle asked for a placement it does not hold
            if explained is exc:
                raise
            raise explained from exc
        self.info: dict[str, Any] = {
            **selection.info(), "model": str(model), "folder": str(folder), "kind": kind,
            "files": [str(p.relative_to(folder)) for p in artifact_files(folder, selection.placement.artifact)],
            "verified": verification(folder, selection.placement.artifact),
            "max_length": self.spec.max_length, "workload": workload,
            "parallel_requests": self.backend.parallel_requests,
            # runs a call of several batches at once on one thread each (0: one batch after another)
            "side_by_side": side.workers if (side := getattr(self.backend, "side_by_side", None)) else 0,
        }
        # Per-batch cost (tokens) that batching weighs against padding when it cuts length-sorted batches.
        self.batch_overhead_tokens = batch_overhead_tokens(selection.placement.device)
        # None: batches as long as their longest input; else padded to a fixed set of shapes (bounded memory).
        self.shape_buckets: ShapeBuckets | None = None
        # The threads batches in flight run on (throughput streams, side-by-side runs): one set for the model's
        # life, opened by the first call that has several batches to run at once.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        """The model's batch threads: as many as it ever runs batches at once."""
        with self._pool_lock:
            if self._pool is None:
                side = getattr(self.backend, "side_by_side", None)
                self._pool = ThreadPoolExecutor(max(self.backend.parallel_requests, side.workers if side else 1),
                                                thread_name_prefix="granite-rt")
            return self._pool

    def run(self, encodings: Sequence, batch_size: int,
            fn: Callable[[np.ndarray, Mapping[str, np.ndarray]], np.ndarray],
            show_progress_bar: bool = False, progress: Progress | None = None,
            cancel: Cancellable | None = None) -> np.ndarray:
        """``fn(backend output, batch inputs)`` → one row per input, over length-sorted batches, in input order.

        ``progress(done, total)`` (batches) after each batch; ``cancel`` set → CancelledError before the next one.
        """
        backend = self.backend
        reports = [r for r in (_print_progress if show_progress_bar else None, progress) if r is not None]
        done = [0, 0]  # batches finished, batches planned (known once the first progress call comes)

        def report(finished: int, total: int) -> None:
            done[:] = finished, total
            for r in reports:
                r(finished, total)

        def runner(run: Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
            def run_batch(batch: Mapping[str, np.ndarray]) -> np.ndarray:
                raise_if_cancelled(cancel, *done)
                return fn(run(batch), batch)
            return run_batch

        side = getattr(backend, "side_by_side", None)
        return map_batches(encodings, batch_size, self.tokenizer.pad_id, runner(backend.run), progress=report,
                           workers=backend.parallel_requests, overhead_tokens=self.batch_overhead_tokens,
                           buckets=self.shape_buckets, pad_to_multiple_of=getattr(backend, "pad_to_multiple_of", 0),
                           side_by_side=None if side is None else SideBySide(runner(side.run), side.workers),
                           pool=self.pool() if backend.parallel_requests > 1 or side is not None else None)

    def close(self) -> None:
        """Stop the batch threads, drop the session and tokenizer, and hand the freed heap back to the OS."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self.backend = self.tokenizer = None  # type: ignore[assignment]
        gc.collect()
        host.trim_heap()


def check_threads(threads: Any) -> None:
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ValueError(f"threads must be None (every physical core) or an int >= 1, got {threads!r}")


def _measured_choice(folder, spec: ModelSpec, backend: str, device: str | list, dtype: str, *, tune: bool,
                     threads: int | None, workload: str = "latency") -> dict[str, str] | None:
    """The CPU placement measured on this machine (granite_rt.tune) for a dtype="auto" load and ``workload``
    (``Decision.cost``), else None.

    A stored decision costs a file read; measuring happens only with ``tune=True`` and no stored decision.
    """
    if dtype != "auto" or device not in ("auto", "cpu"):
        if tune:
            raise ValueError(f"tune=True measures the CPU placements for dtype='auto'; with device={device!r}, "
                             f"dtype={dtype!r} there is nothing to choose")
        return None
    cache = host.cache_dir()
    decision = tuning.stored(folder, spec, cache)
    if decision is None and tune:
        decision, _ = tuning.tune_folder(folder, spec, cache, threads=threads)
    return decision.choice(backend, workload) if decision is not None else None


def _print_progress(done: int, total: int) -> None:
    """A one-line batch counter on stderr (no tqdm dependency)."""
    print(f"\rbatches {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


class RuntimeModel:
    """What Embedder and Reranker share: loading by (model, backend, device, dtype), spec, tokenizer, info.

    ``workload="latency"`` (default) runs one batch at a time on all cores; ``"throughput"`` asks OpenVINO
    for its THROUGHPUT hint, and onnxruntime on the CPU for one thread per run, and keeps as many batches in flight
    as there are streams (bulk encoding).
    ``tune=True`` measures this folder's CPU placements once per machine (granite_rt.tune, seconds to a
    minute) unless a decision is stored; any ``dtype="auto"`` load follows a stored decision.
    ``threads=N`` caps the CPU threads it computes on (backend and tokenizer) at N.
    ``close()`` (or the end of a ``with`` block) releases the session; the ``*_async`` methods run on one
    worker thread per model (see granite_rt.background).
    """

    kind: Kind
    _model: LoadedModel | None = None
    _worker: Worker | None = None

    def __init__(self, model: str | os.PathLike, backend: str = "auto", device: str | list = "auto",
                 dtype: str = "auto", *, threads: int | None = None, allow_fallback: bool | None = None,
                 revision: str | None = None, workload: str = "latency", tune: bool = False) -> None:
        self._model = LoadedModel(model, self.kind, backend=backend, device=device, dtype=dtype,
                                  threads=threads, allow_fallback=allow_fallback, revision=revision,
                                  workload=workload, tune=tune)
        self.spec = self._model.spec
        self.info: dict[str, Any] = {**self._model.info, **self._describe()}
        self._worker = Worker(f"{_CLASS[self.kind]}")

    @property
    def _loaded(self) -> LoadedModel:
        """The loaded model; ModelClosedError after close()."""
        if self._model is None:
            raise ModelClosedError(f"this {_CLASS[self.kind]} is closed (close() or the end of its with block "
                                   "released its session); load the model again")
        return self._model

    @property
    def tokenizer(self) -> Tokenizer:
        return self._loaded.tokenizer

    @property
    def closed(self) -> bool:
        return self._model is None

    def close(self) -> None:
        """Release the inference session and tokenizer: queued and running async calls are cancelled and
        waited for, then the memory goes back to the OS. Calling it again does nothing; any other call
        afterwards raises ModelClosedError."""
        if self._worker is not None:
            self._worker.close()
        model, self._model = self._model, None
        if model is not None:
            model.close()

    def __enter__(self):
        self._loaded
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self, encodings: Sequence, batch_size: int, fn: Callable[[np.ndarray, Mapping[str, np.ndarray]], np.ndarray],
             show_progress_bar: bool, progress: Progress | None, cancel: Cancellable | None) -> np.ndarray:
        return self._loaded.run(encodings, batch_size, fn, show_progress_bar=show_progress_bar,
                                progress=check_progress(progress), cancel=check_cancel(cancel))

    async def _in_worker(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        self._loaded
        assert self._worker is not None
        return await self._worker.run(call, **kwargs)

    @property
    def max_length(self) -> int:
        """Tokens per input (special tokens included); longer input is truncated, as the reference does."""
        return self.spec.max_length

    @property
    def batch_overhead_tokens(self) -> int:
        """What one more batch costs, in tokens, when length-sorted batches are cut (16 on CPU, see
        ``granite_rt.batching``). Set it to ``batching.MAX_BATCH_TOKENS`` for the fewest, fullest batches:
        texts of very different lengths then share a padded batch (what padding-invariance checks need)."""
        return self._loaded.batch_overhead_tokens

    @batch_overhead_tokens.setter
    def batch_overhead_tokens(self, tokens: int) -> None:
        if not is_int(tokens) or tokens < 0:
            raise ValueError(f"batch_overhead_tokens must be an int >= 0, got {tokens!r}")
        self._loaded.batch_overhead_tokens = tokens

    @property
    def shape_buckets(self) -> ShapeBuckets | None:
        """None (default): each batch is as wide as its longest input. A ``batching.ShapeBuckets``: batches are
        padded to its widths and row counts, so the backend only ever sees that fixed set of shapes and its
        per-shape memory stays bounded in a long-running process (results unchanged; padding costs compute)."""
        return self._loaded.shape_buckets

    @shape_buckets.setter
    def shape_buckets(self, buckets: ShapeBuckets | None) -> None:
        if buckets is not None and not isinstance(buckets, ShapeBuckets):
            raise TypeError(f"shape_buckets must be a ShapeBuckets or None, got {type(buckets).__name__}")
        self._loaded.shape_buckets = buckets

    def _describe(self) -> dict[str, Any]:
        """Model-specific entries of ``info``."""
        raise NotImplementedError
