"""Load a contender and give it one call shape: ``embed(texts)`` / ``rerank(query, passages)``.

Imported inside the worker (or cold-start) process only, so each library is imported where it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench.contenders import BATCH_SIZE, Contender


def load(contender: Contender, kind: str, checkpoint: Path, exported: Path) -> Callable[..., Any]:
    """Return the contender's call for ``kind``: embedder → f(texts), reranker → f(query, passages)."""
    loaders = {"st": _sentence_transformers, "fastembed": _fastembed, "granite-rt": _granite_rt}
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
    path = str(checkpoint if backend == "torch" else exported)
    if kind == "embedder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, **kwargs)
        return lambda texts: model.encode(texts, batch_size=BATCH_SIZE)
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(path, **kwargs)
    return lambda query, passages: model.predict([(query, p) for p in passages], batch_size=BATCH_SIZE)


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


def _granite_rt(opts: dict, kind: str, checkpoint: Path, exported: Path):
    if kind == "embedder":
        from granite_rt import Embedder

        model = Embedder(str(exported), backend=opts["backend"], dtype=opts["dtype"])
        return lambda texts: model.encode(texts, batch_size=BATCH_SIZE)
    from granite_rt import Reranker

    model = Reranker(str(exported), backend=opts["backend"], dtype=opts["dtype"])
    return lambda query, passages: model.predict([(query, p) for p in passages], batch_size=BATCH_SIZE)
