"""Full-size random-weight Granite models for the benchmarks, exported by the project's export stage.

Speed does not depend on weight values, so bench/ builds the exact published shapes with random
weights (tokenizer trained on Cranfield + Tatoeba so real text tokenizes realistically) and caches
them under bench/.models/, keyed by the shape and a fingerprint of the exporter's source.
Run as ``python -m bench.models NAME OUT`` (in the project's venv) to build one model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".models"
IBM_STYLE = CACHE / "ibm-style"   # bench.ibm_style's folders, one per checkpoint
FORMATS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
TOKENIZER_VOCAB = 32_000


@dataclass(frozen=True)
class BenchModel:
    """Where one benchmark model lives: the torch checkpoint and the exported folder."""

    name: str
    checkpoint: Path   # transformers + sentence-transformers files (for the torch contenders)
    exported: Path     # what granite-rt export wrote (onnx/, openvino/, tokenizer, manifest)
    ibm_style: Path | None = None  # the same checkpoint as IBM's Hub repos ship it (bench.ibm_style), where built

    def files(self, whose: str) -> Path:
        """The folder a contender loads: granite-rt's export ("granite-rt") or the IBM-style one ("ibm-style")."""
        if whose == "granite-rt":
            return self.exported
        if self.ibm_style is None:
            raise ValueError(f"the {self.name} model has no IBM-style folder (bench.ibm_style builds the embedder's)")
        return self.ibm_style

    @property
    def tokenizer_json(self) -> Path:
        return self.checkpoint / "tokenizer.json"


def _shapes() -> dict:
    from granite_export.random_models import GRANITE_97M_MULTILINGUAL_R2, GRANITE_RERANKER_ENGLISH_R2

    return {"embedder": GRANITE_97M_MULTILINGUAL_R2, "reranker": GRANITE_RERANKER_ENGLISH_R2}


# The runtime modules and data that shape the exported files too: the INT8 recipe, graph edits, calibration text.
EXPORT_INPUTS = ("granite_rt/int8_recipe.py", "granite_rt/onnx_graph.py", "granite_rt/calibration")


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """``dst`` as a hard link to ``src`` (no bytes copied), or a copy on a file system without hard links; views
    made of such links are never written through (their writers add files or unlink before writing)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def exporter_fingerprint() -> str:
    """Hash of the export stage's source and the runtime parts it writes files with: a change re-exports."""
    digest = hashlib.sha256()
    paths = list((ROOT / "export").rglob("*.py"))
    for name in EXPORT_INPUTS:
        path = ROOT / name
        paths += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for path in sorted(paths):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def model_key(name: str, shape) -> str:
    """Cache key of the random checkpoint: model name, shape and tokenizer size."""
    payload = json.dumps([name, asdict(shape), TOKENIZER_VOCAB], sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def _latest_export(folder: Path) -> Path | None:
    """The most recently finished export of a cached checkpoint, whatever exporter version made it."""
    done = [p.parent for p in folder.glob("exported-*/.bench-ready")]
    return max(done, key=lambda p: (p / ".bench-ready").stat().st_mtime) if done else None


def ensure_models(names=("embedder", "reranker"), python: str = sys.executable, log=print,
                  reuse_export: bool = False) -> dict[str, BenchModel]:
    """Build each random checkpoint once, export it once per exporter version; return them by name.

    ``reuse_export`` takes the latest finished export even if the exporter's source changed since.
    """
    models = {}
    for name, shape in _shapes().items():
        if name not in names:
            continue
        folder = CACHE / model_key(name, shape)
        exported = (_latest_export(folder) if reuse_export else None) or folder / f"exported-{exporter_fingerprint()}"
        model = BenchModel(name, folder / "checkpoint", exported)
        for step, target in (("checkpoint", model.checkpoint), ("export", model.exported)):
            if not (target / ".bench-ready").exists():
                log(f"{step}: {name} ({shape.num_hidden_layers} layers, hidden {shape.hidden_size}) "
                    f"→ {target} (cached after the first run) ...")
                subprocess.run([python, "-m", "bench.models", step, name, str(target)], cwd=ROOT, check=True)
        models[name] = model
    return models


def build_checkpoint(name: str, target: Path) -> None:
    """The random-weight checkpoint of ``name``, tokenizer trained on Cranfield + Tatoeba."""
    from granite_export.random_models import build_checkpoint as build

    from bench.data import tokenizer_corpus

    build(target, _shapes()[name], texts=tokenizer_corpus(), tokenizer_vocab=TOKENIZER_VOCAB)


def export(name: str, target: Path) -> None:
    """Export the cached checkpoint with the project's export stage in every benchmarked format."""
    from granite_export import export_model

    export_model(target.parent / "checkpoint", target, formats=list(FORMATS))


if __name__ == "__main__":
    step, name, target = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    {"checkpoint": build_checkpoint, "export": export}[step](name, target)
    (target / ".bench-ready").write_text(json.dumps({"name": name, "shape": asdict(_shapes()[name]),
                                                     "exporter": exporter_fingerprint()}, default=str))
