"""Load a contender and give it one call shape: ``embed(texts)`` / ``rerank(query, passages)``.

Imported inside the worker (or cold-start) process only, so each library is imported where it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from bench.contenders import BATCH_SIZE, Contender
from bench.models import CACHE, IBM_STYLE

# Copies of model folders that transformers 4 can load (legacy_tokenizer_view), beside the bench models;
# the IBM-style folders' copies in their own tree.
VIEWS = CACHE / "transformers4-views"
IBM_STYLE_VIEWS = IBM_STYLE / "transformers4-views"


def load(contender: Contender, kind: str, checkpoint: Path, exported: Path) -> Callable[..., Any]:
    """Return the contender's call for ``kind``: embedder → f(texts), reranker → f(query, passages)."""
    loaders = {"st": _sentence_transformers, "fastembed": _fastembed, "granite-rt": _granite_rt,
               "ov-genai": _openvino_genai}
    return loaders[contender.family](contender.options, kind, checkpoint, exported)


def _sentence_transformers(opts: dict, kind: str, checkpoint: Path, exported: Path):
    backend = opts["backend"]
    kwargs: dict[str, Any] = {"device": "cpu"}
    if backend != "torch":
        kwargs["backend"] = backend
        if "file_name" in opts:
            kwargs["model_kwargs"] = {"file_name": opts["file_name"]}
    # torch loads the transformers checkpoint; the other backends load the exported files, as a
    # user does with IBM's Hub repos (which ship onnx/ and openvino/ beside the weights).
    views = IBM_STYLE_VIEWS if IBM_STYLE.resolve() in exported.resolve().parents else VIEWS
    path = str(checkpoint if backend == "torch" else legacy_tokenizer_view(exported, _transformers_major(), views))
    if kind == "embedder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, **kwargs)
        return lambda texts: model.encode(texts, batch_size=BATCH_SIZE)
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(path, **kwargs)
    return lambda query, passages: model.predict([(query, p) for p in passages], batch_size=BATCH_SIZE)


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def legacy_tokenizer_view(folder: Path, transformers_major: int, views: Path = VIEWS) -> Path:
    """``folder`` as transformers 4 can load it (sentence-transformers' onnx backend runs there).

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"`` in tokenizer_config.json, a class
    transformers 4 does not have. Its equivalent there is PreTrainedTokenizerFast over the same
    tokenizer.json, so under transformers 4 this returns a copy of ``folder`` in ``views`` (hard links: no
    bytes copied) whose tokenizer_config.json names that class; otherwise ``folder`` itself. The copy is
    named after the files' names, sizes and mtimes, so a changed ``folder`` gets a new one.
    """
    import hashlib
    import json
    import os

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if transformers_major >= 5 or config.get("tokenizer_class") != "TokenizersBackend":
        return folder
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256(f"{folder.resolve()}\n{stats}".encode()).hexdigest()[:12]
    view = views / f"{folder.name}-{key}"
    if (view / "tokenizer_config.json").exists():
        return view

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or no hard links there
            shutil.copy2(src, dst)

    staging = view.with_name(f"{view.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crashed run
    shutil.copytree(folder, staging, copy_function=link)
    (staging / "tokenizer_config.json").unlink()  # a link: writing through it would change ``folder``
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return _publish(staging, view)


def _fastembed(opts: dict, kind: str, checkpoint: Path, exported: Path):
    if kind != "embedder":
        raise ValueError("fastembed is benchmarked as an embedder only")
    import json

    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"granite-rt-bench/{opts['model_file']}"
    dim = json.loads((exported / "config.json").read_text())["hidden_size"]
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.CLS, normalization=True,
                                       sources=ModelSource(hf=name), dim=dim, model_file=opts["model_file"])
    model = TextEmbedding(name, specific_model_path=str(exported))
    return lambda texts: list(model.embed(texts, batch_size=BATCH_SIZE))


def genai_view(folder: Path, ir: str, views: Path = VIEWS.parent / "genai-views") -> Path:
    """``folder`` as OpenVINO GenAI loads a model: the IR ``ir`` as ``openvino_model.xml``/``.bin`` (hard links)
    beside the tokenizer and config files, and the tokenizer converted once by openvino_tokenizers."""
    import hashlib
    import os

    main = folder / ir
    stats = f"{main.resolve()} {main.stat().st_size} {main.stat().st_mtime_ns}"
    view = views / f"{folder.name}-{Path(ir).stem}-{hashlib.sha256(stats.encode()).hexdigest()[:12]}"
    if (view / "openvino_tokenizer.xml").exists():
        return view
    staging = view.with_name(f"{view.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for src, name in ((main, "openvino_model.xml"), (main.with_suffix(".bin"), "openvino_model.bin"),
                      *((p, p.name) for p in folder.glob("*.json"))):
        try:
            os.link(src, staging / name)
        except OSError:
            shutil.copy2(src, staging / name)
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    ov.save_model(convert_tokenizer(AutoTokenizer.from_pretrained(str(folder))), str(staging / "openvino_tokenizer.xml"))
    return _publish(staging, view)


def _openvino_genai(opts: dict, kind: str, checkpoint: Path, exported: Path):
    """OpenVINO GenAI's TextEmbeddingPipeline / TextRerankPipeline (torch-free, C++ tokenizer and pooling)."""
    import openvino_genai as genai

    view = str(genai_view(exported, opts["file"]))
    if kind == "embedder":
        config = genai.TextEmbeddingPipeline.Config()
        config.pooling_type = genai.TextEmbeddingPipeline.PoolingType.CLS
        config.normalize = True  # batch_size / max_length left unset: they make GenAI reshape to static shapes
        pipe = genai.TextEmbeddingPipeline(view, "CPU", config)
        return lambda texts: [v for i in range(0, len(texts), BATCH_SIZE) for v in pipe.embed_documents(texts[i:i + BATCH_SIZE])]
    config = genai.TextRerankPipeline.Config()
    config.top_n = 1_000_000
    pipe = genai.TextRerankPipeline(view, "CPU", config)
    return lambda query, passages: pipe.rerank(query, passages)


def _granite_rt(opts: dict, kind: str, checkpoint: Path, exported: Path):
    if kind == "embedder":
        from granite_rt import Embedder

        model = Embedder(str(exported), backend=opts["backend"], dtype=opts["dtype"])
        call = lambda texts: model.encode(texts, batch_size=BATCH_SIZE)  # noqa: E731
    else:
        from granite_rt import Reranker

        model = Reranker(str(exported), backend=opts["backend"], dtype=opts["dtype"])
        call = lambda query, passages: model.predict([(query, p) for p in passages], batch_size=BATCH_SIZE)  # noqa: E731
    call.precision = model.info["dtype"]  # what dtype="auto" chose: the report's efficiency needs it
    return call


def _publish(staging: Path, view: Path) -> Path:
    """Rename a finished view into place; when another worker made it first, keep theirs."""
    try:
        staging.rename(view)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return view
