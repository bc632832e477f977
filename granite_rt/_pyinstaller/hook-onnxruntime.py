"""PyInstaller hook for onnxruntime, in place of pyinstaller-hooks-contrib's (an entry-point hook has the
higher priority): the same native libraries, plus the distribution's metadata, minus the Python tools
onnxruntime's ``__init__`` mentions but an inference app never runs.

``onnxruntime/__init__.py`` imports ``onnxruntime.transformers.machine_info`` (a device report, used only
when psutil, py-cpuinfo and py3nvml are all installed), and through it the transformer optimisation
tools, which import torch, transformers and sympy: PyInstaller's import scan pulled those into every
granite-rt app built in a venv that has them. An app that imports them itself still gets them.
"""

from PyInstaller.utils.hooks import collect_dynamic_libs, copy_metadata

from granite_rt.backends.onnxruntime import distributions as onnxruntime_distributions

binaries = collect_dynamic_libs("onnxruntime")
datas = [entry for name in onnxruntime_distributions() for entry in copy_metadata(name)]
excludedimports = ["onnxruntime.transformers", "onnxruntime.quantization", "onnxruntime.tools",
                   "onnxruntime.training", "torch", "transformers", "sympy"]
