"""PyInstaller hook for openvino (pyinstaller-hooks-contrib has none).

OpenVINO dlopens its device plugins and model frontends from the folder of libopenvino
(``openvino/libs``), so every library there is collected into that folder, the versioned ones
(``libopenvino_ir_frontend.so.2641``) too: PyInstaller's own library scan misses what is dlopened.
Only the frontends a granite-rt model needs are kept, the IR reader (our OpenVINO artifacts) and ONNX;
the PyTorch, TensorFlow, Paddle, JAX and GGUF frontends (and the Python modules that drive them) would
add their libraries and pull in their frameworks. The distribution's metadata tells the runtime that
openvino is installed.
"""

from pathlib import Path

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata, get_package_paths

_UNUSED_FRONTENDS = ("pytorch", "tensorflow", "tensorflow_lite", "paddle", "jax", "gguf")
# openvino.torch is the torch.compile backend; openvino.tools the model converters.
_UNUSED_MODULES = ("openvino.torch", "openvino.tools") + tuple(f"openvino.frontend.{f}" for f in _UNUSED_FRONTENDS)
_LIBS = Path(get_package_paths("openvino")[1]) / "libs"


def _wanted(name: str) -> bool:
    return not any(f"openvino_{frontend}_frontend" in name for frontend in _UNUSED_FRONTENDS)


binaries = [(str(path), "openvino/libs") for pattern in ("*.so*", "*.dll", "*.dylib")
            for path in sorted(_LIBS.glob(pattern)) if _wanted(path.name)]
datas = collect_data_files("openvino", includes=["libs/*.json", "libs/*.xml"]) + copy_metadata("openvino")
hiddenimports = collect_submodules("openvino", filter=lambda name: not name.startswith(_UNUSED_MODULES))
excludedimports = ["torch", "tensorflow", "jax", "paddle", *_UNUSED_MODULES]
