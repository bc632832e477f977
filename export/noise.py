"""Known-harmless warnings, log lines and bars of the converters, silenced where the export provokes them.

Each filter is scoped (``warnings.catch_warnings``, a logger level or filter restored on exit) and says
why the message does not apply to this export; any other warning, and every error, still reaches the
user. tests/test_export_warnings.py runs the export with all warnings shown and fails on a new one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def torch_tracing() -> Iterator[None]:
    """``torch.onnx.export`` (TorchScript) of a transformers model.

    - TracerWarning ("might cause the trace to be incorrect", "treated as a constant"): shapes and config
      values read while tracing. Harmless here because every exported graph is checked against eager torch
      on inputs of other lengths, with and without padding (verify.py): a value that did not generalise
      fails the export instead of warning about it.
    - "Exporting aten::index operator of advanced indexing ... incorrect results" (negative or duplicate
      indices): the same parity check runs the exported indexing on real inputs.
    - DeprecationWarning "legacy TorchScript-based ONNX export" and torch's own "feature will be removed"
      inside it: the TorchScript exporter is chosen on purpose (onnx_export.py says why).
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning,
                                module=r"torch\.onnx")
        yield


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def onnxruntime_quantization() -> Iterator[None]:
    """``onnxruntime.quantization.quantize_static``'s advice on the root logger, "Please consider (to run)
    pre-processing before quantization": that pre-processing (quant_pre_process) is onnxruntime's graph
    optimiser and shape inference; the export quantises its own graph as is and checks the INT8 result
    against torch. Without a handler on the root logger that call would also install a stderr handler for
    the rest of the process (``logging.warning`` calls ``basicConfig``): a NullHandler stands in meanwhile."""
    root = logging.getLogger()
    drop = _DropMessages("Please consider to run pre-processing", "Please consider pre-processing")
    placeholder = logging.NullHandler() if not root.handlers else None
    root.addFilter(drop)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if placeholder is not None:
            root.removeHandler(placeholder)


@contextlib.contextmanager
def nncf_quantization(progress: bool) -> Iterator[None]:
    """``nncf.quantize``: its INFO lines list the nodes our own ignored scope keeps in fp32 (quantize.py
    chose them; the manifest records the scope), so only WARNING and above pass. Its progress bars
    ("Statistics collection", printed to stdout even when that is a file) show only with ``progress``."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    bars = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    try:
        with bars:
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def transformers_loading() -> Iterator[None]:
    """transformers' "Loading weights" bars and load-time INFO/advice while the export loads the checkpoint
    and the sentence-transformers reference (the export's own status lines say what is loaded); warnings
    and errors of transformers still show."""
    from transformers.utils import logging as hf_logging

    verbosity, bars_were_on = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()
