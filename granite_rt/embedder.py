"""Embedder: texts → vectors, with sentence-transformers' ``encode`` call shape.

tokenize → length-sorted batches → backend → pooling the model declares → [truncate] → [L2].
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from granite_rt.arguments import as_list
from granite_rt.background import Cancellable, Progress
from granite_rt.output import check_precision, output_dim, quantize, truncate
from granite_rt.pooling import pool
from granite_rt.runtime import RuntimeModel
from granite_rt.tokenize import check_texts
from granite_rt.windows import check_long_text, group_windows, pool_windows, split, warn_truncated, window_sizes


class Embedder(RuntimeModel):
    """A sentence embedding model (Granite R2, or any sentence-transformers encoder) on onnxruntime/OpenVINO.

    ``Embedder(model, backend="auto"|"onnx"|"openvino", device="auto"|"cpu"|..., dtype="auto"|"fp32"|...)``;
    ``model`` is an exported folder, a folder in IBM's Hub layout, or a Hub repo id.
    """

    kind = "embedder"

    def _describe(self) -> dict[str, Any]:
        return {"dim": self.dim, "pooling": "+".join(self.spec.pooling), "normalize": self.spec.normalize,
                "matryoshka_dims": list(self.spec.matryoshka_dims)}

    @property
    def dim(self) -> int:
        """Length of the vectors ``encode`` returns (before truncate_dim)."""
        return self.spec.dim

    def encode(self, texts: str | Iterable[str], batch_size: int = 32, normalize: bool = True,
               truncate_dim: int | None = None, show_progress_bar: bool = False, *, precision: str = "float32",
               ranges: np.ndarray | None = None, long_text: str = "truncate", window_tokens: int | None = None,
               window_stride: int | None = None, return_truncation: bool = False, progress: Progress | None = None,
               cancel: Cancellable | None = None) -> Any:
        """(n, dim) vectors in input order; a single string gives one (dim,) vector.

        ``normalize=True`` L2-normalises the final vectors; ``False`` returns the pooled vectors raw
        (without the model's Normalize step). ``truncate_dim`` keeps the first dimensions (Matryoshka).
        ``precision`` is the output format (float32, float16, int8, uint8, binary, ubinary; ``ranges``
        calibrates int8/uint8), see granite_rt.output. ``long_text``: "truncate" at max_length (reported by
        a warning, or as a bool array with ``return_truncation=True``), "window" (mean of overlapping
        windows' vectors) or "windows" (a TextWindows per text), see granite_rt.windows.
        ``progress(done, total)`` is called after each batch (counted in batches); ``cancel`` (a CancelToken
        or threading.Event) set → CancelledError before the next batch, nothing returned.
        """
        single = isinstance(texts, str)
        items = check_texts(as_list(texts, "texts") if not single else [texts])
        check_precision(precision)
        check_long_text(long_text)
        dim = output_dim(truncate_dim, self.dim, self.spec.matryoshka_dims)
        sizes = window_sizes(window_tokens, window_stride, self.max_length) if long_text != "truncate" else None
        truncated = np.zeros(len(items), dtype=bool)
        if not items:
            result: Any = [] if long_text == "windows" else quantize(np.zeros((0, dim), np.float32), precision)
        elif sizes is None:
            encodings = self.tokenizer.encode(items)
            truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
            result = quantize(self._vectors(encodings, batch_size, show_progress_bar, dim, normalize, progress,
                                            cancel), precision, ranges)
        else:
            windows = split(self.tokenizer.encode_full(items), *sizes)
            vectors = self._vectors(windows, batch_size, show_progress_bar, dim, normalize, progress, cancel)
            owners = [w.text_index for w in windows]
            if long_text == "window":
                result = quantize(pool_windows(vectors, owners, len(items), normalize), precision, ranges)
            else:
                result = group_windows(quantize(vectors, precision, ranges), windows, len(items))
        if single:
            result, truncated = result[0], truncated[0]
        if return_truncation:
            return result, truncated
        if np.any(truncated):
            warn_truncated(truncated, self.max_length)
        return result

    async def encode_async(self, texts: str | Iterable[str], *, progress: Progress | None = None,
                           cancel: Cancellable | None = None, **kwargs: Any) -> Any:
        """``encode`` on this model's worker thread, awaitable; one call runs at a time, the others wait.

        ``progress(done, total)`` runs on the event loop's thread. Cancelling the awaiting task (or
        setting ``cancel``) stops the work before its next batch; the model stays usable.
        """
        return await self._in_worker(self.encode, texts=texts, progress=progress, cancel=cancel, **kwargs)

    def _vectors(self, encodings: Sequence, batch_size: int, show_progress_bar: bool, dim: int,
                 normalize: bool, progress: Progress | None = None, cancel: Cancellable | None = None) -> np.ndarray:
        """float32 (n, dim) vectors of tokenized texts or windows: pooled, truncated to dim, normalised when asked."""
        modes = self.spec.pooling
        pooled = self._run(encodings, batch_size, lambda hidden, batch: pool(hidden, batch["attention_mask"], modes),
                           show_progress_bar, progress, cancel)
        return truncate(pooled, dim, normalize)

