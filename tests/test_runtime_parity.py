"""The runtime against the torch reference (sentence-transformers 6 on the same weights), both backends.

References are computed here with torch and saved as .npy; the runtime runs in a child process where
torch, transformers and sentence-transformers cannot be imported, and saves its outputs the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import sample_texts
from torch_blocked import run_without_torch

EDGE_TEXTS = ["", "   ", "😀🚀 emoji only", "mixed 日本語 Русский عربى text", "nul\x00byte",
              "boundary layer flow over a flat plate " * 40]  # the last is longer than max_length: truncated
TEXTS = sample_texts(limit_per_language=2)[:22] + EDGE_TEXTS
QUERY = "What is the chemical formula of water?"
DOCS = ["Water is a chemical substance with the formula H2O.", "The quick brown fox jumps over the lazy dog.",
        "Boundary layer flow over a flat plate at supersonic speeds.", "", "日本語のテキストも扱えます。",
        "water " * 200, "Der schnelle braune Fuchs springt über den faulen Hund."]
LONG_QUERY = "heat transfer in the boundary layer " * 30  # longest_first truncation cuts the query too

# (name, model kind, folders fixture, layout, backend)
CASES = [
    ("tiny-embedder-onnx", "embedder", "tiny_embedder_folders", "export", "onnx"),
    ("tiny-embedder-openvino", "embedder", "tiny_embedder_folders", "hub", "openvino"),
    ("minilm-onnx", "embedder", "minilm_folders", "export", "onnx"),
    ("minilm-openvino", "embedder", "minilm_folders", "hub", "openvino"),
    ("tiny-reranker-onnx", "reranker", "tiny_reranker_folders", "export", "onnx"),
    ("tiny-reranker-openvino", "reranker", "tiny_reranker_folders", "hub", "openvino"),
]

CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from granite_rt import Embedder, Reranker
job = json.loads(Path(sys.argv[-1] if False else {job!r}).read_text())
out = Path(job["out"])
for case in job["cases"]:
    if case["kind"] == "embedder":
        emb = Embedder(case["folder"], backend=case["backend"], dtype="fp32")
        np.save(out / (case["name"] + ".npy"), emb.encode(job["texts"], batch_size=5))
        info = emb.info
    else:
        rr = Reranker(case["folder"], backend=case["backend"], dtype="fp32")
        np.save(out / (case["name"] + ".npy"), rr.predict(job["pairs"], batch_size=4, activation="identity"))
        np.save(out / (case["name"] + "-scores.npy"), rr.predict(job["pairs"], batch_size=4))
        ranking = rr.rank(job["query"], job["docs"], return_documents=True)
        (out / (case["name"] + "-rank.json")).write_text(json.dumps(ranking))
        info = rr.info
    (out / (case["name"] + "-info.json")).write_text(json.dumps({{k: v for k, v in info.items()
                                                                 if isinstance(v, (str, int, list))}}))
print("torch" in sys.modules, "transformers" in sys.modules)
"""


def _pairs() -> list[tuple[str, str]]:
    return [(QUERY, d) for d in DOCS] + [(LONG_QUERY, d) for d in DOCS[:3]]


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_embedder_checkpoint, tiny_reranker_checkpoint, minilm_checkpoint) -> Path:
    """Torch references, saved as .npy: ST embeddings, CrossEncoder logits, scores and ranking."""
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    out = tmp_path_factory.mktemp("torch-references")
    for name, checkpoint in (("tiny-embedder", tiny_embedder_checkpoint), ("minilm", minilm_checkpoint)):
        st = SentenceTransformer(str(checkpoint), device="cpu")
        np.save(out / f"{name}.npy", st.encode(TEXTS, batch_size=5, normalize_embeddings=True))
    ce = CrossEncoder(str(tiny_reranker_checkpoint), device="cpu")
    np.save(out / "tiny-reranker.npy", ce.predict(_pairs(), batch_size=4, activation_fn=torch.nn.Identity()))
    np.save(out / "tiny-reranker-scores.npy", ce.predict(_pairs(), batch_size=4))
    (out / "tiny-reranker-rank.json").write_text(json.dumps(ce.rank(QUERY, DOCS, return_documents=True)))
    return out


@pytest.fixture(scope="module")
def runtime_outputs(tmp_path_factory, request) -> Path:
    """Every case run once by the runtime in a torch-free child process."""
    out = tmp_path_factory.mktemp("runtime-outputs")
    cases = [{"name": name, "kind": kind, "backend": backend,
              "folder": str(request.getfixturevalue(fixture)[layout])}
             for name, kind, fixture, layout, backend in CASES]
    job = out / "job.json"
    job.write_text(json.dumps({"out": str(out), "cases": cases, "texts": TEXTS, "pairs": _pairs(),
                               "query": QUERY, "docs": DOCS}))
    proc = run_without_torch(CHILD.format(job=str(job)))
    assert proc.stdout.split()[-2:] == ["False", "False"], proc.stdout
    return out


@pytest.mark.parametrize("name", [c[0] for c in CASES if c[1] == "embedder"])
def test_embeddings_match_sentence_transformers(name, references, runtime_outputs):
    ours = np.load(runtime_outputs / f"{name}.npy")
    ref = np.load(references / f"{name.rsplit('-', 1)[0]}.npy")
    assert ours.shape == ref.shape and ours.dtype == np.float32
    cosine = (ours * ref).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.99999, f"worst text {int(cosine.argmin())}: cosine {cosine.min():.7f}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_reranker_matches_cross_encoder(backend, references, runtime_outputs):
    name = f"tiny-reranker-{backend}"
    logits, ref_logits = np.load(runtime_outputs / f"{name}.npy"), np.load(references / "tiny-reranker.npy")
    assert logits.shape == ref_logits.shape == (len(_pairs()),)
    assert np.abs(logits - ref_logits).max() <= 1e-3
    scores, ref_scores = np.load(runtime_outputs / f"{name}-scores.npy"), np.load(references / "tiny-reranker-scores.npy")
    assert np.abs(scores - ref_scores).max() <= 1e-4  # sigmoid: what CrossEncoder applies for one label
    ours = json.loads((runtime_outputs / f"{name}-rank.json").read_text())
    ref = json.loads((references / "tiny-reranker-rank.json").read_text())
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in ref]
    assert [r["text"] for r in ours] == [r["text"] for r in ref]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in ref], atol=1e-4)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_info_names_backend_and_files(name, runtime_outputs):
    backend = name.rsplit("-", 1)[1]
    info = json.loads((runtime_outputs / f"{name}-info.json").read_text())
    assert info["backend"] == backend and info["device"] == "cpu" and info["dtype"] == "fp32"
    expected = "onnx/model.onnx" if backend == "onnx" else "openvino/openvino_model.xml"
    assert info["files"][0] == expected


def test_tokenization_matches_reference(tiny_embedder_checkpoint, tiny_reranker_checkpoint, minilm_checkpoint,
                                        tiny_embedder_folders, tiny_reranker_folders, minilm_folders):
    """Same ids as sentence-transformers' preprocess: template, truncation at its max length, pairs."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from granite_rt.model_folder import load_spec
    from granite_rt.tokenize import Tokenizer

    def ours(folder: Path) -> Tokenizer:
        spec = load_spec(folder)
        return Tokenizer(folder, spec.max_length, do_lower_case=spec.do_lower_case,
                         truncation_side=spec.truncation_side)

    def unpadded(features) -> list[list[int]]:
        return [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]

    for checkpoint, folders in ((tiny_embedder_checkpoint, tiny_embedder_folders), (minilm_checkpoint, minilm_folders)):
        st = SentenceTransformer(str(checkpoint), device="cpu")
        tok = ours(folders["hub"])
        assert tok.max_length == st.max_seq_length
        assert [e.ids for e in tok.encode(TEXTS)] == unpadded(st.preprocess(TEXTS))
    ce = CrossEncoder(str(tiny_reranker_checkpoint), device="cpu")
    tok = ours(tiny_reranker_folders["hub"])
    assert tok.max_length == ce.max_seq_length
    assert [e.ids for e in tok.encode_pairs(_pairs())] == unpadded(ce.preprocess([list(p) for p in _pairs()]))


def test_do_lower_case_as_sentence_transformers(tiny_embedder_checkpoint, tiny_embedder_folders, tmp_path):
    """sentence_bert_config do_lower_case=True: a Lowercase step is put before the tokenizer's normalizer."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from granite_rt.model_folder import load_spec
    from granite_rt.tokenize import Tokenizer

    checkpoint = Path(shutil.copytree(tiny_embedder_checkpoint, tmp_path / "ckpt"))
    folder = Path(shutil.copytree(tiny_embedder_folders["hub"], tmp_path / "hub"))
    for path in (checkpoint / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "do_lower_case": True}))
    texts = ["What Is The Chemical Formula Of WATER?", "Der Schnelle Braune FUCHS", "ÉCOLE Русский ТЕКСТ"]
    spec = load_spec(folder)
    assert spec.do_lower_case
    ours = [e.ids for e in Tokenizer(folder, spec.max_length, do_lower_case=True).encode(texts)]
    st = SentenceTransformer(str(checkpoint), device="cpu")
    features = st.preprocess(texts)
    assert ours == [ids[m.bool()].tolist() for ids, m in zip(features["input_ids"], features["attention_mask"])]
    assert ours != [e.ids for e in Tokenizer(folder, spec.max_length).encode(texts)]  # lower-casing changed ids
