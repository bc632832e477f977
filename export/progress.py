"""Progress of the export's long steps (tracing, INT8 calibration, verification): step lines with elapsed time.

On stderr, and only where a person watches it: a terminal, and not ``--quiet``. A step prints
``  label …`` when it starts, counts (``12/300``) while it runs, and ``  label: 4.1 s`` when done.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Iterator


class Progress:
    """Step lines on ``stream`` (stderr by default); ``enabled=None``: only when the stream is a terminal."""

    def __init__(self, enabled: bool | None = None, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._label: str | None = None
        self._start = 0.0
        self._width = 0  # of the line being rewritten, to blank what a shorter rewrite leaves

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator["Progress"]:
        """``with progress.step("tracing …"):`` around one long step."""
        self._label, self._start, self._width = label, time.perf_counter(), 0
        self._rewrite(f"  {label} …")
        try:
            yield self
        except BaseException:
            self._finish("stopped after ")
            raise
        self._finish("")

    def _finish(self, how: str) -> None:
        self._rewrite(f"  {self._label}: {how}{time.perf_counter() - self._start:.1f} s")
        self._write("\n")
        self._label = None

    def count(self, done: int, total: int) -> None:
        """Inside a step: ``done`` of ``total`` items (calibration texts) so far."""
        if self._label is not None:
            self._rewrite(f"  {self._label}: {done}/{total}, {time.perf_counter() - self._start:.1f} s")

    def _rewrite(self, line: str) -> None:
        self._write("\r" + line.ljust(self._width) if self._width else line)
        self._width = max(self._width, len(line))

    def _write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text)
            self.stream.flush()
