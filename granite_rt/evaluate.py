"""Deprecated module path: the evaluation lives in ``granite_rt.eval.runner`` (``granite-rt eval`` in the CLI).

Kept one release so ``from granite_rt.evaluate import evaluate, Subsample`` keeps working, with a
DeprecationWarning.
"""

import warnings

from granite_rt.eval.runner import CPU_VARIANTS, EvalReport, EvalRow, Subsample, evaluate, machine_info  # noqa: F401

warnings.warn("granite_rt.evaluate moved to granite_rt.eval.runner", DeprecationWarning, stacklevel=2)
