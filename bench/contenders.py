"""Who is measured: sentence-transformers, fastembed, OpenVINO GenAI, llama.cpp and granite-rt configurations, as data."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bench.ibm_style import ONNX_FP32, OPENVINO_INT8, dynamic_int8_file

Family = Literal["st", "fastembed", "granite-rt", "ov-genai", "llama.cpp"]
Env = Literal["project", "bench", "st-onnx", "llamacpp"]  # project venv (.venv) or a peers' venv of bench.env.ENVS
# llama.cpp packs a decode call's sequences into one attention over all its tokens (masked), so a call of
# (a)'s 8 × 512 tokens took 7.1-7.3 s against 6.0 s for 8 calls of 512 (F16, 3 rounds, 2 cores, load 6):
# at most 512 tokens per call (llama.cpp's default n_ubatch), a longer text alone, up to 4096.
LLAMA_CPP_TOKENS = {"tokens_per_call": 512, "max_tokens": 4096}
# Whose files a contender loads: granite-rt's export (fused contrib ops, static INT8 through the INT8 gate) or
# the IBM-style folder (bench.ibm_style: optimum's plain export and ORT dynamic INT8, as IBM's Hub repos ship).
Files = Literal["granite-rt", "ibm-style"]
IBM_FILES = " (IBM files)"
BATCH_SIZE = 32                     # sentence-transformers' default, used by every contender


@dataclass(frozen=True)
class Contender:
    """One configuration a user could pick; ``options`` are passed to its adapter in bench.worker."""

    name: str
    family: Family
    env: Env
    kinds: tuple[str, ...]                  # "embedder", "reranker"
    options: dict = field(default_factory=dict)
    default: bool = False                   # granite-rt's defaults (dtype="auto"): the one with targets
    files: Files = "granite-rt"


def _granite(backend: str, dtype: str, default: bool = False) -> Contender:
    label = "defaults (auto)" if default else f"{'ORT' if backend == 'onnx' else 'OpenVINO'} {dtype}"
    return Contender(f"granite-rt {label}", "granite-rt", "project", ("embedder", "reranker"),
                     {"backend": backend, "dtype": dtype}, default=default)


def _on_ibm_files(contender: Contender) -> Contender:
    """``contender`` loading the IBM-style folder's files instead of granite-rt's (embedder only: the folder
    is built for the bench embedder)."""
    return replace(contender, name=contender.name + IBM_FILES, kinds=("embedder",), files="ibm-style", default=False)


def _ibm_file_contenders() -> tuple[Contender, ...]:
    """What a user of IBM's repo runs: ST and fastembed on its plain and dynamic INT8 ONNX files (the INT8 build
    for this CPU, as the repo names them), ST on its OpenVINO INT8 IR, and granite-rt's defaults on the folder."""
    from granite_rt.host import cpu_flags

    dynamic = dynamic_int8_file(cpu_flags())
    return tuple(_on_ibm_files(c) for c in (
        Contender("ST onnx", "st", "st-onnx", (), {"backend": "onnx", "file_name": ONNX_FP32}),
        Contender("ST onnx dynamic INT8", "st", "st-onnx", (), {"backend": "onnx", "file_name": dynamic}),
        Contender("fastembed fp32", "fastembed", "bench", (), {"model_file": ONNX_FP32}),
        Contender("fastembed dynamic INT8", "fastembed", "bench", (), {"model_file": dynamic}),
        Contender("ST openvino INT8 IR", "st", "bench", (), {"backend": "openvino", "file_name": OPENVINO_INT8}),
        _granite("auto", "auto", default=True),
    ))


CONTENDERS: tuple[Contender, ...] = (
    Contender("ST torch", "st", "project", ("embedder", "reranker"), {"backend": "torch"}),
    Contender("ST openvino", "st", "bench", ("embedder", "reranker"), {"backend": "openvino"}),
    Contender("ST openvino INT8 IR", "st", "bench", ("embedder", "reranker"),
              {"backend": "openvino", "file_name": "openvino/openvino_model_qint8_quantized.xml"}),
    Contender("ST onnx", "st", "st-onnx", ("embedder", "reranker"),
              {"backend": "onnx", "file_name": "onnx/model.onnx"}),
    Contender("ST onnx INT8", "st", "st-onnx", ("embedder", "reranker"),
              {"backend": "onnx", "file_name": "onnx/model_qint8.onnx"}),
    Contender("fastembed fp32", "fastembed", "bench", ("embedder",), {"model_file": "onnx/model.onnx"}),
    Contender("fastembed INT8", "fastembed", "bench", ("embedder",), {"model_file": "onnx/model_qint8.onnx"}),
    Contender("OpenVINO GenAI", "ov-genai", "bench", ("embedder", "reranker"),
              {"file": "openvino/openvino_model.xml"}),
    Contender("OpenVINO GenAI INT8 IR", "ov-genai", "bench", ("embedder", "reranker"),
              {"file": "openvino/openvino_model_qint8_quantized.xml"}),
    *(Contender(f"llama.cpp GGUF {gguf.upper()}", "llama.cpp", "llamacpp", ("embedder",),
                {"type": gguf, **LLAMA_CPP_TOKENS}) for gguf in ("f16", "q8_0")),
    _granite("auto", "auto", default=True),
    _granite("onnx", "fp32"),
    _granite("onnx", "int8"),
    _granite("openvino", "fp32"),
    _granite("openvino", "bf16"),
    _granite("openvino", "int8"),
    _granite("openvino", "int8+bf16"),
    *_ibm_file_contenders(),
)

# Cold start (e): a fresh process per run, so only the configurations the targets compare.
COLD_START = ("ST torch", "ST openvino", "fastembed INT8", "granite-rt defaults (auto)", "granite-rt ORT int8")


def by_name(name: str) -> Contender:
    """The contender called ``name``."""
    for contender in CONTENDERS:
        if contender.name == name:
            return contender
    raise KeyError(f"no contender named {name!r}; known: {[c.name for c in CONTENDERS]}")
