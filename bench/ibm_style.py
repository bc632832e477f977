"""IBM-style model folders: the files IBM's Hub repos ship, made from a bench checkpoint the way IBM made them.

IBM's Granite Embedding R2 repos ship, beside the weights, the files sentence-transformers' export helpers
write, and users of fastembed and sentence-transformers load those, not granite-rt's exports (fused contrib
ops, static INT8 through the INT8 gate). This module makes the same files from the random-weight bench
checkpoint, each with the tool that writes it on the Hub:

- ``onnx/model.onnx``: ``SentenceTransformer(checkpoint, backend="onnx")`` (optimum-onnx's export, plain ONNX
  ops, inputs ``input_ids``/``attention_mask``, output ``last_hidden_state``), run in the st-onnx venv
  (sentence-transformers 5.1.2, optimum-onnx 0.1.0, transformers 4.57). transformers 4.57 reads the
  checkpoint's transformers-5 config: its ModernBERT defaults (global rope theta 160,000, local 10,000,
  a global layer every 3) are the values ``rope_parameters``/``layer_types`` carry, and ``check`` compares
  the export with the torch reference (transformers 5);
- ``onnx/model_quint8_avx2.onnx``, ``onnx/model_qint8_avx512_vnni.onnx``: sentence-transformers'
  ``export_dynamic_quantized_onnx_model(model, "avx2" / "avx512_vnni", ...)``: onnxruntime *dynamic* INT8
  (activation scales computed per call over the whole batch: a vector depends on its batch neighbours);
- ``openvino/openvino_model.xml`` and ``openvino/openvino_model_qint8_quantized.xml``: what
  ``export_static_quantized_openvino_model`` writes. optimum-intel (>= 2.0) refuses to export ModernBERT
  ("a custom or unsupported architecture"), so the IR is ``openvino.convert_model`` of the plain ONNX (fp32
  weights, as optimum-intel saves them) and the INT8 IR is the ``nncf.quantize`` call optimum-intel makes
  for the default ``OVQuantizationConfig()``: preset MIXED, model_type TRANSFORMER, no ignored scope,
  fast bias correction, overflow fix off, subset_size 128 of 300 calibration samples padded to 384 tokens.
  The default calibration set (glue/sst2 from the Hub) is out of reach offline: 300 Tatoeba English sentences
  stand in (short single sentences, as sst2's are).

Run as ``python -m bench.ibm_style build CHECKPOINT TARGET`` (project venv); it runs each step in the venv
that has its tool and leaves TARGET complete or absent. ``python -m bench.ibm_style check FOLDER`` prints the
files' fidelity against the torch reference and the batch dependence of the dynamic INT8 files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.data import TATOEBA
from bench.models import link_or_copy
from granite_rt.staging import staged_folder

ROOT = Path(__file__).resolve().parents[1]
ONNX_FP32 = "onnx/model.onnx"
# export_dynamic_quantized_onnx_model's file names: model_<weights dtype>_<config>.onnx
ONNX_DYNAMIC_INT8 = {"avx2": "onnx/model_quint8_avx2.onnx", "avx512_vnni": "onnx/model_qint8_avx512_vnni.onnx"}
OPENVINO_FP32 = "openvino/openvino_model.xml"
OPENVINO_INT8 = "openvino/openvino_model_qint8_quantized.xml"
FILES = (ONNX_FP32, *ONNX_DYNAMIC_INT8.values(), OPENVINO_FP32, OPENVINO_INT8)
READY = ".bench-ready"
CALIBRATION_SAMPLES = 300     # sentence-transformers' num_samples default for the calibration set
CALIBRATION_SUBSET = 128      # OVQuantizationConfig().num_samples is None → nncf subset_size 128
CALIBRATION_LENGTH = 384      # sentence-transformers pads every calibration sample to 384 tokens


def dynamic_int8_file(flags) -> str:
    """The dynamic INT8 file a user of IBM's repo picks on a CPU with ``flags`` (``granite_rt.host.cpu_flags()``):
    the avx512_vnni build where the CPU has VNNI, else the avx2 one."""
    return ONNX_DYNAMIC_INT8["avx512_vnni" if "avx512_vnni" in flags else "avx2"]


def ensure_ibm_style(checkpoint: Path, target: Path, pythons: dict[str, str], log=print) -> Path:
    """``target`` as an IBM-style folder of ``checkpoint``, built once (``pythons``: "project" and "st-onnx")."""
    if (target / READY).exists():
        return target
    log(f"IBM-style files: {checkpoint} → {target} (optimum export, dynamic INT8, NNCF IR; cached) ...")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with staged_folder(target) as staging:   # every step adds files: the links to the checkpoint are never written
        shutil.copytree(checkpoint, staging, copy_function=link_or_copy, dirs_exist_ok=True)
        for env_name, step in (("st-onnx", "onnx"), ("project", "openvino")):
            subprocess.run([pythons[env_name], "-m", "bench.ibm_style", step, str(staging)], cwd=ROOT, env=env,
                           check=True)
        missing = [f for f in FILES if not (staging / f).is_file()]
        if missing:
            raise RuntimeError(f"the IBM-style build of {checkpoint} wrote no {', '.join(missing)}")
        (staging / READY).write_text(json.dumps({"checkpoint": str(checkpoint), "files": list(FILES)}))
    return target


def export_onnx(folder: Path) -> None:
    """(st-onnx venv) sentence-transformers' own ONNX export of ``folder``, then its two dynamic INT8 files."""
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    from bench.adapters import legacy_tokenizer_view

    with tempfile.TemporaryDirectory() as tmp:
        view = legacy_tokenizer_view(folder, int(transformers.__version__.split(".")[0]), views=Path(tmp) / "views")
        exported = Path(tmp) / "exported"
        SentenceTransformer(str(view), backend="onnx", device="cpu").save_pretrained(str(exported))
        model = SentenceTransformer(str(exported), backend="onnx", device="cpu", model_kwargs={"file_name": ONNX_FP32})
        for isa in ONNX_DYNAMIC_INT8:
            export_dynamic_quantized_onnx_model(model, isa, str(exported))
        (folder / "onnx").mkdir(exist_ok=True)
        for path in sorted((exported / "onnx").iterdir()):  # model.onnx (+ .onnx_data where > 2 GB), the INT8 files
            shutil.move(str(path), folder / "onnx" / path.name)


def calibration_texts(n: int = CALIBRATION_SAMPLES) -> list[str]:
    """``n`` short English sentences (Tatoeba), standing in for sentence-transformers' glue/sst2 default."""
    lines = (TATOEBA / "tatoeba.fra-eng.eng").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:n]


def export_openvino(folder: Path) -> None:
    """(project venv) The fp32 IR of the plain ONNX, and NNCF INT8 as optimum-intel's default config runs it."""
    import nncf
    import numpy as np
    import openvino as ov
    from transformers import AutoTokenizer

    model = ov.convert_model(str(folder / ONNX_FP32))
    (folder / "openvino").mkdir(exist_ok=True)
    ov.save_model(model, str(folder / OPENVINO_FP32), compress_to_fp16=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoded = tokenizer(calibration_texts(), padding="max_length", max_length=CALIBRATION_LENGTH, truncation=True)
    names = [p.get_any_name() for p in model.inputs]
    samples = [{name: np.asarray([encoded[name][i]], dtype=np.int64) for name in names}
               for i in range(len(encoded["input_ids"]))]
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED, model_type=nncf.ModelType.TRANSFORMER,
        subset_size=CALIBRATION_SUBSET, fast_bias_correction=True,
        advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE))
    ov.save_model(quantized, str(folder / OPENVINO_INT8), compress_to_fp16=False)


def _pooled(hidden: "np.ndarray", mask: "np.ndarray", mode: str) -> "np.ndarray":
    """The L2-normalised sentence vectors of a batch: CLS token or masked mean (the folder's 1_Pooling mode)."""
    import numpy as np

    if mode == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask[..., None].astype(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fidelity(folder: Path, texts: list[str], neighbours: list[str]) -> dict:
    """(project venv) Cosines of every IBM-style file's vectors against sentence-transformers on torch (the
    reference, same weights), each of ``texts`` encoded alone and in a batch with ``neighbours`` (longer texts).

    Per file: ``alone``/``batched``: the mean and min cosine to the reference; ``alone_vs_batched``: the cosine
    between a text's two vectors (1.0 for a batch-independent graph; dynamic INT8 computes activation scales over
    the whole padded batch, so its vectors move with their neighbours).
    """
    import numpy as np
    import onnxruntime as ort
    import openvino as ov
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    mode = "cls" if pooling.get("pooling_mode_cls_token") or pooling.get("pooling_mode") == "cls" else "mean"
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=1, normalize_embeddings=True)
    core = ov.Core()

    def runner(path: str):
        if path.endswith(".onnx"):
            session = ort.InferenceSession(str(folder / path), providers=["CPUExecutionProvider"])
            wanted = [i.name for i in session.get_inputs()]
            return lambda feed: session.run(None, {k: v for k, v in feed.items() if k in wanted})[0]
        compiled = core.compile_model(str(folder / path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        wanted = [p.get_any_name() for p in compiled.inputs]
        return lambda feed: compiled({k: v for k, v in feed.items() if k in wanted})[compiled.outputs[0]]

    def encode(run, batch: list[str]) -> "np.ndarray":
        feed = {k: v.astype(np.int64) for k, v in tokenizer(batch, padding=True, truncation=True, return_tensors="np").items()}
        return _pooled(run(feed), feed["attention_mask"], mode)

    out = {}
    for path in FILES:
        run = runner(path)
        alone = np.stack([encode(run, [t])[0] for t in texts])
        batched = np.stack([encode(run, [t, *neighbours])[0] for t in texts])
        out[path] = {key: {"mean": float(c.mean()), "min": float(c.min())} for key, c in (
            ("alone", (alone * reference).sum(1)), ("batched", (batched * reference).sum(1)),
            ("alone_vs_batched", (alone * batched).sum(1)))}
    return out


def _check(folder: Path) -> None:
    from bench.data import cranfield_docs, cranfield_queries

    long_docs = sorted(cranfield_docs(), key=len)[-7:]
    print(json.dumps({"folder": str(folder), "texts": "8 Cranfield queries; neighbours: the 7 longest abstracts",
                      "fidelity": fidelity(folder, cranfield_queries()[:8], long_docs)}, indent=1))


if __name__ == "__main__":
    step, *args = sys.argv[1:]
    if step == "build":
        from bench.env import ensure_env

        ensure_ibm_style(Path(args[0]), Path(args[1]), {"project": sys.executable, "st-onnx": str(ensure_env("st-onnx"))})
    else:
        {"onnx": export_onnx, "openvino": export_openvino, "check": _check}[step](Path(args[0]))
