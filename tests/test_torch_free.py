"""The runtime never needs torch/transformers, and importing it loads no backend."""

from __future__ import annotations

import json
import subprocess
import sys

from torch_blocked import BLOCKED, run_without_torch

HEAVY = ("onnxruntime", "openvino", "torch", "transformers", "sentence_transformers", "optimum", "granite_export",
         "huggingface_hub", "tokenizers",
         "importlib.metadata",  # stdlib, but ~60 ms of imports (email, zipfile, csv): asked for only when needed
         "asyncio")  # stdlib, ~30 ms (a quarter of importing granite_rt): only the async API needs it


def test_import_loads_no_backend_and_no_torch():
    code = ("import sys, json, granite_rt, granite_rt.embedder, granite_rt.reranker, granite_rt.model_folder, "
            "granite_rt.tokenize, granite_rt.batching, granite_rt.pooling, granite_rt.backends; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []
    proc = subprocess.run([sys.executable, "-c", "import granite_rt; print(granite_rt.Embedder.__name__)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "Embedder"


def test_a_load_on_onnxruntime_imports_no_importlib_metadata(tiny_embedder_folders):
    """The installed versions a load asks for (the engines' probes) come from listing sys.path: importlib.metadata
    would add ~25 ms to a cold start (granite_rt.host.installed_version)."""
    code = ("import sys, json; from granite_rt import Embedder; "
            f"emb = Embedder({str(tiny_embedder_folders['export'])!r}, backend='onnx'); emb.encode('water'); "
            "print(json.dumps([emb.info['backend'], 'importlib.metadata' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["onnx", False]


def test_embed_and_rerank_with_torch_blocked(tiny_embedder_folders, tiny_reranker_folders):
    code = f"""
import json, sys
try:
    import torch
    blocked = False
except ImportError:
    blocked = True
from granite_rt import Embedder, Reranker
emb = Embedder({str(tiny_embedder_folders["export"])!r}, backend="onnx")
vectors = emb.encode(["what is the chemical formula of water?", "H2O", ""])
ov = Embedder({str(tiny_embedder_folders["hub"])!r}, backend="openvino", dtype="fp32")
ov_vectors = ov.encode(["what is the chemical formula of water?", "H2O", ""])
rr = Reranker({str(tiny_reranker_folders["export"])!r})
ranking = rr.rank("what is the chemical formula of water?", ["H2O is water", "a fox", "rain"])
print(json.dumps({{"blocked": blocked, "shape": list(vectors.shape), "ov_shape": list(ov_vectors.shape),
                  "cos": float((vectors * ov_vectors).sum(axis=1).min()),
                  "ids": sorted(r["corpus_id"] for r in ranking),
                  "loaded": [m for m in {BLOCKED!r} if m in sys.modules]}}))
"""
    result = json.loads(run_without_torch(code).stdout.strip().splitlines()[-1])
    assert result["blocked"] is True
    assert result["loaded"] == []
    assert result["shape"] == result["ov_shape"] == [3, 64]
    assert result["cos"] > 0.9999  # both backends agree without any torch in the process
    assert result["ids"] == [0, 1, 2]
