"""PyInstaller hook for openvino (pyinstaller-hooks-contrib has none).

OpenVINO finds its device plugins and model frontends next to libopenvino in ``openvino/libs``, so
those are collected there, keeping the layout. Only the frontends a granite-rt model needs are kept:
the IR reader (our OpenVINO artifacts) and ONNX (compiling an ONNX graph); the PyTorch, TensorFlow,
Paddle, JAX and GGUF frontends (and the Python modules that drive them) would add their libraries and
pull in their frameworks. The distribution's metadata tells the runtime openvino is installed.
"""

from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs, collect_submodules, copy_metadata

_UNUSED_FRONTENDS = ("pytorch", "tensorflow", "paddle", "jax", "gguf")


def _wanted(entry: tuple[str, str]) -> bool:
    name = entry[0].rsplit("/", 1)[-1]
    return not any(f"openvino_{frontend}_frontend" in name for frontend in _UNUSED_FRONTENDS)


binaries = [b for b in collect_dynamic_libs("openvino") if _wanted(b)]
datas = collect_data_files("openvino", includes=["libs/*.json", "libs/*.xml"]) + copy_metadata("openvino")
hiddenimports = [m for m in collect_submodules("openvino", filter=lambda name: not any(
    f".frontend.{frontend}" in name for frontend in _UNUSED_FRONTENDS)) if ".tools" not in m]
excludedimports = ["torch", "tensorflow", "jax", "paddle", "openvino.frontend.pytorch",
                   "openvino.frontend.tensorflow", "openvino.frontend.jax", "openvino.tools"]
