"""A loaded model: folder resolved, spec read, tokenizer and backend opened once — shared by Embedder and Reranker."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from granite_rt.arguments import is_int
from granite_rt import devices
from granite_rt.batching import batch_overhead_tokens, map_batches
from granite_rt.errors import WrongKindError
from granite_rt.model_folder import Kind, ModelSpec, artifact_files, load_spec, resolve_model, verification
from granite_rt.tokenize import Tokenizer

_CLASS = {"embedder": "Embedder", "reranker": "Reranker"}
_ARTICLE = {"embedder": "an", "reranker": "a"}


class LoadedModel:
    """Spec + tokenizer + backend of one model; ``run`` maps a function over length-sorted padded batches."""

    def __init__(self, model: str | os.PathLike, kind: Kind, *, backend: str = "auto", device: str | list = "auto",
                 dtype: str = "auto", threads: int | None = None, allow_fallback: bool | None = None,
                 revision: str | None = None, workload: str = "latency") -> None:
        folder = resolve_model(model, backend=backend, dtype=dtype, revision=revision)
        self.spec: ModelSpec = load_spec(folder)
        if self.spec.kind != kind:
            raise WrongKindError(f"{model} is {_ARTICLE[self.spec.kind]} {self.spec.kind}; load it with granite_rt."
                                 f"{_CLASS[self.spec.kind]}, not {_CLASS[kind]}", str(model), self.spec.kind)
        self.tokenizer = Tokenizer(folder, self.spec.max_length, do_lower_case=self.spec.do_lower_case,
                                   truncation_side=self.spec.truncation_side)
        self.backend, selection = devices.open_best(folder, self.spec.artifacts, backend, device, dtype,
                                                    allow_fallback=allow_fallback, threads=threads, workload=workload)
        self.info: dict[str, Any] = {
            **selection.info(), "model": str(model), "folder": str(folder), "kind": kind,
            "files": [str(p.relative_to(folder)) for p in artifact_files(folder, selection.placement.artifact)],
            "verified": verification(folder, selection.placement.artifact),
            "max_length": self.spec.max_length, "workload": workload,
            "parallel_requests": self.backend.parallel_requests,
        }
        # Per-batch cost (tokens) that batching weighs against padding when it cuts length-sorted batches.
        self.batch_overhead_tokens = batch_overhead_tokens(selection.placement.device)

    def run(self, encodings: Sequence, batch_size: int,
            fn: Callable[[np.ndarray, Mapping[str, np.ndarray]], np.ndarray],
            show_progress_bar: bool = False) -> np.ndarray:
        """``fn(backend output, batch inputs)`` → one row per input, over length-sorted batches, in input order."""
        return map_batches(encodings, batch_size, self.tokenizer.pad_id,
                           lambda batch: fn(self.backend.run(batch), batch),
                           progress=_print_progress if show_progress_bar else None,
                           workers=self.backend.parallel_requests,
                           overhead_tokens=self.batch_overhead_tokens,
                           pad_to_multiple_of=getattr(self.backend, "pad_to_multiple_of", 0))


def _print_progress(done: int, total: int) -> None:
    """A one-line batch counter on stderr (no tqdm dependency)."""
    print(f"\rbatches {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


class RuntimeModel:
    """What Embedder and Reranker share: loading by (model, backend, device, dtype), spec, tokenizer, info.

    ``workload="latency"`` (default) runs one batch at a time on all cores; ``"throughput"`` asks OpenVINO
    for its THROUGHPUT hint and keeps as many batches in flight as it has infer requests (bulk encoding).
    """

    kind: Kind

    def __init__(self, model: str | os.PathLike, backend: str = "auto", device: str | list = "auto",
                 dtype: str = "auto", *, threads: int | None = None, allow_fallback: bool | None = None,
                 revision: str | None = None, workload: str = "latency") -> None:
        self._model = LoadedModel(model, self.kind, backend=backend, device=device, dtype=dtype,
                                  threads=threads, allow_fallback=allow_fallback, revision=revision,
                                  workload=workload)
        self.spec = self._model.spec
        self.tokenizer = self._model.tokenizer
        self.info: dict[str, Any] = {**self._model.info, **self._describe()}

    @property
    def max_length(self) -> int:
        """Tokens per input (special tokens included); longer input is truncated, as the reference does."""
        return self.spec.max_length

    @property
    def batch_overhead_tokens(self) -> int:
        """What one more batch costs, in tokens, when length-sorted batches are cut (16 on CPU, see
        ``granite_rt.batching``). Set it to ``batching.MAX_BATCH_TOKENS`` for the fewest, fullest batches:
        texts of very different lengths then share a padded batch (what padding-invariance checks need)."""
        return self._model.batch_overhead_tokens

    @batch_overhead_tokens.setter
    def batch_overhead_tokens(self, tokens: int) -> None:
        if not is_int(tokens) or tokens < 0:
            raise ValueError(f"batch_overhead_tokens must be an int >= 0, got {tokens!r}")
        self._model.batch_overhead_tokens = tokens

    def _describe(self) -> dict[str, Any]:
        """Model-specific entries of ``info``."""
        raise NotImplementedError
