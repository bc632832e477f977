"""export/progress.py: step lines with elapsed time, on a terminal only, off with --quiet."""

from __future__ import annotations

import io
import re

import pytest

from granite_export.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_shows_its_label_counts_and_elapsed_time_on_a_terminal():
    out = _Terminal()
    steps = Progress(stream=out)
    with steps.step("calibrating onnx-int8"):
        for done in (1, 2, 3):
            steps.count(done, 3)
    text = out.getvalue()
    assert text.startswith("  calibrating onnx-int8 …\r")
    assert "\r  calibrating onnx-int8: 3/3, " in text
    last = text.rstrip("\n").rsplit("\r", 1)[1]
    assert re.fullmatch(r"  calibrating onnx-int8: \d+\.\d s *", last), last  # padded over the longer count line
    assert text.endswith("\n") and text.count("\n") == 1


def test_a_failed_step_says_it_stopped():
    out = _Terminal()
    with pytest.raises(KeyError), Progress(stream=out).step("tracing"):
        raise KeyError("boom")
    assert re.search(r"\r  tracing: stopped after \d+\.\d s *\n$", out.getvalue())


def test_nothing_when_not_a_terminal_or_quiet():
    pipe, terminal = io.StringIO(), _Terminal()
    for steps in (Progress(stream=pipe), Progress(False, stream=terminal)):
        with steps.step("tracing"):
            steps.count(1, 2)
    assert pipe.getvalue() == "" and terminal.getvalue() == ""
    assert Progress(True, stream=pipe).enabled  # forced on (export_model(progress=True))
