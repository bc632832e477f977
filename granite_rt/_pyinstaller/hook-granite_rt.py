"""PyInstaller hook for granite_rt.

- Every backend module: they are imported when a model is loaded, not when granite_rt is.
- huggingface_hub is left out: a desktop app loads its model from a bundle on disk (docs/desktop.md), and
  the Hub client's import scan (safetensors.torch, fsspec, pydantic, jinja2, httpx, ...) pulled torch and
  with it transformers, scipy and scikit-learn into a build venv that has them: 1015 MB and 9 min instead
  of the ONNX app's size. An app that downloads models imports huggingface_hub itself, which keeps it.
- The export stage and the torch stack are never imported by the runtime.
"""

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

hiddenimports = collect_submodules("granite_rt.backends")
excludedimports = ["huggingface_hub", "granite_export", "torch", "transformers", "sentence_transformers",
                   "optimum", "nncf"]
datas = copy_metadata("granite-rt")
