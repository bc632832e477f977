"""GPU check: embedder and reranker on CUDA and TensorRT against CPU fp32, printed as a PASS/FAIL table.

Run on a machine with onnxruntime-gpu (and TensorRT for the TensorRT rows):

    python tests/gpu/check_gpu.py --build-tiny                      # random tiny models, exported here
    python tests/gpu/check_gpu.py --build-granite                   # random weights at Granite R2 sizes
    python tests/gpu/check_gpu.py --embedder DIR --reranker DIR     # existing model folders

Bounds: cosine per vector >= 0.99999 (fp32) / 0.999 (fp16); reranker |delta logit| <= 1e-3 (fp32) /
0.05 (fp16) and the same top document for every query (up to reference ties within that bound). A device or artifact that is absent is SKIP;
exit status 1 on any FAIL, 2 when nothing could run on a GPU at all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEVICES = ("cuda", "tensorrt")
DTYPES = ("fp32", "fp16")
COSINE_MIN = {"fp32": 0.99999, "fp16": 0.999}
LOGIT_MAX = {"fp32": 1e-3, "fp16": 0.05}

TEXTS = [
    "what is the chemical formula of water?",
    "Water is a chemical substance with the formula H2O: two hydrogen atoms bound to one oxygen atom.",
    "The boundary layer on a flat plate in supersonic flow thickens with the distance from the leading edge.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le nuage de points montre une corrélation forte entre les deux variables mesurées.",
    "El agua hierve a cien grados Celsius al nivel del mar.",
    "Москва — столица России.", "東京は日本の首都です。", "我喜欢在周末读书。", "مرحبا بالعالم",
    "x", "", "emoji 🙂 and mixed scripts: naïve café Ελληνικά",
    " ".join(["A long passage about heat transfer in laminar and turbulent flow regimes."] * 12),
] + [f"Sentence number {i} about aerodynamics, structures and numerical methods." * (1 + i % 5) for i in range(30)]

QUERIES = ["what is the chemical formula of water?", "supersonic boundary layer", "capital of Russia"]


@dataclass
class Row:
    model: str
    device: str
    dtype: str
    status: str           # PASS, FAIL, SKIP
    metric: str = ""
    seconds: float = 0.0
    detail: str = ""


def build_random(out: Path, granite_size: bool) -> tuple[Path, Path]:
    """Random embedder and reranker checkpoints (tiny, or Granite R2 sizes), exported as fp32 and fp16 ONNX."""
    from granite_export import export_model
    from granite_export import random_models as rm

    texts = TEXTS * 4
    shapes = ((rm.GRANITE_97M_MULTILINGUAL_R2, rm.GRANITE_RERANKER_ENGLISH_R2) if granite_size
              else (rm.TINY_EMBEDDER, rm.TINY_RERANKER))
    folders = []
    for name, shape in zip(("embedder", "reranker"), shapes):
        checkpoint = rm.build_checkpoint(out / f"{name}-checkpoint", shape, texts=texts, max_seq_length=256)
        folder = out / name
        try:
            export_model(checkpoint, folder, formats=("onnx", "onnx-fp16"), log=lambda _: None)
        except Exception as exc:  # an export stage without fp16: the fp16 rows then use TensorRT's own fp16
            print(f"note: fp16 export failed ({type(exc).__name__}: {exc}); exporting fp32 only", file=sys.stderr)
            export_model(checkpoint, folder, formats=("onnx",), log=lambda _: None)
        folders.append(folder)
    return folders[0], folders[1]


def embed(folder: Path, device: str, dtype: str) -> tuple[np.ndarray, float, dict]:
    from granite_rt import Embedder

    model = Embedder(folder, backend="onnx", device=device, dtype=dtype)
    model.encode(TEXTS[:4])  # warm-up: TensorRT builds its engine here
    start = time.perf_counter()
    vectors = model.encode(TEXTS, batch_size=8)
    return vectors, time.perf_counter() - start, model.info


def score(folder: Path, device: str, dtype: str) -> tuple[np.ndarray, float, dict]:
    from granite_rt import Reranker

    model = Reranker(folder, backend="onnx", device=device, dtype=dtype)
    pairs = [(q, t) for q in QUERIES for t in TEXTS]
    model.predict(pairs[:4])
    start = time.perf_counter()
    logits = model.predict(pairs, batch_size=8, activation="identity")
    return logits, time.perf_counter() - start, model.info


def compare(kind: str, got: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[bool, str]:
    if kind == "embedder":
        cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        return bool(cos.min() >= COSINE_MIN[dtype]), f"min cosine {cos.min():.6f} (>= {COSINE_MIN[dtype]})"
    delta = float(np.abs(got - ref).max())
    # the GPU's top document must be a top document of the reference, up to ties within the bound
    top_same = all(r[np.argmax(g)] >= r.max() - LOGIT_MAX[dtype]
                   for g, r in zip(got.reshape(len(QUERIES), -1), ref.reshape(len(QUERIES), -1)))
    return (delta <= LOGIT_MAX[dtype] and top_same,
            f"max |dlogit| {delta:.2e} (<= {LOGIT_MAX[dtype]}), top-1 {'same' if top_same else 'DIFFERS'}")


def check(models: dict[str, Path], devices: tuple[str, ...]) -> list[Row]:
    from granite_rt.devices import probe
    from granite_rt.errors import ModelFileError

    inventory = probe()
    rows = []
    for kind, folder in models.items():
        run = embed if kind == "embedder" else score
        ref, ref_s, _ = run(folder, "cpu", "fp32")
        rows.append(Row(kind, "cpu", "fp32", "REF", "reference", ref_s))
        for device in devices:
            for dtype in DTYPES:
                if not inventory.present("onnx", device):
                    rows.append(Row(kind, device, dtype, "SKIP", detail=inventory.absent_reason("onnx", device)))
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")  # any fallback warning is a failure here
                        got, seconds, info = run(folder, device, dtype)
                except ModelFileError as exc:
                    rows.append(Row(kind, device, dtype, "SKIP", detail=f"no artifact: {exc}"))
                    continue
                except Exception as exc:  # report every failure in the table, keep checking the rest
                    rows.append(Row(kind, device, dtype, "FAIL", detail=f"{type(exc).__name__}: {exc}"[:300]))
                    continue
                ok, metric = compare(kind, got, ref, dtype)
                detail = f"{info.get('file')} providers={info.get('providers')}"
                rows.append(Row(kind, device, dtype, "PASS" if ok else "FAIL", metric, seconds, detail))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'model':<9} {'device':<9} {'dtype':<5} {'result':<6} {'seconds':>8}  metric / detail")
    for r in rows:
        print(f"{r.model:<9} {r.device:<9} {r.dtype:<5} {r.status:<6} {r.seconds:>8.3f}  {r.metric}"
              + (f"  [{r.detail}]" if r.detail else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-tiny", action="store_true", help="build and export tiny random models first")
    parser.add_argument("--build-granite", action="store_true",
                        help="build and export random models of the Granite R2 sizes first (slower, realistic timings)")
    parser.add_argument("--work", type=Path, help="folder for --build-* (default: a temporary folder)")
    parser.add_argument("--embedder", type=Path, help="an embedder model folder")
    parser.add_argument("--reranker", type=Path, help="a reranker model folder")
    parser.add_argument("--devices", default=",".join(DEVICES), help="comma-separated subset of cuda,tensorrt")
    args = parser.parse_args(argv)
    devices = tuple(d for d in args.devices.split(",") if d)
    unknown = sorted(set(devices) - set(DEVICES))
    if unknown:
        parser.error(f"unknown devices {unknown}; choose from {DEVICES}")
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        if args.build_tiny or args.build_granite:
            models["embedder"], models["reranker"] = build_random(args.work or Path(tmp), args.build_granite)
        if args.embedder:
            models["embedder"] = args.embedder
        if args.reranker:
            models["reranker"] = args.reranker
        if not models:
            parser.error("give --build-tiny, --build-granite or --embedder/--reranker folders")
        from granite_rt.report import info_report

        print(info_report(), end="\n\n")
        rows = check(models, devices)
    print_table(rows)
    if any(r.status == "FAIL" for r in rows):
        print("RESULT: FAIL")
        return 1
    if not any(r.status == "PASS" for r in rows):
        print("RESULT: nothing ran on a GPU (all SKIP)")
        return 2
    print("RESULT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
