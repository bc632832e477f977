"""granite-rt: a torch-free runtime for Granite Embedding R2 embedders and rerankers.

Importing the package loads no backend: onnxruntime or OpenVINO is imported when a model is loaded.
"""

from granite_rt.background import CancelToken
from granite_rt.devices import available_devices
from granite_rt.embedder import Embedder
from granite_rt.reranker import Reranker

__version__ = "0.1.0"
__all__ = ["CancelToken", "Embedder", "Reranker", "available_devices", "__version__"]
