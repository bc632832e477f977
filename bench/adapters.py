"""Load a contender and give it one call shape: ``embed(texts)`` / ``rerank(query, passages)``.

Imported inside the worker (or cold-start) process only, so each library is imported where it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from bench.contenders import BATCH_SIZE, Contender
from bench.models import CACHE, IBM_STYLE, link_or_copy

# Copies of model folders that transformers 4 can load (legacy_tokenizer_view), beside the bench models;
# the IBM-style folders' copies in their own tree.
VIEWS = CACHE / "transformers4-views"
IBM_STYLE_VIEWS = IBM_STYLE / "transformers4-views"


def load(contender: Contender, kind: str, checkpoint: Path, exported: Path) -> Callable[..., Any]:
    """Return the contender's call for ``kind``: embedder → f(texts), reranker → f(query, passages)."""
    loaders = {"st": _sentence_transformers, "fastembed": _fastembed, "granite-rt": _granite_rt,
               "ov-genai": _openvino_genai, "llama.cpp": _llama_cpp}
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

    staging = view.with_name(f"{view.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crashed run
    shutil.copytree(folder, staging, copy_function=link_or_copy)
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
        link_or_copy(src, staging / name)
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


def _llama_cpp(opts: dict, kind: str, checkpoint: Path, exported: Path):
    """llama.cpp (llama-cpp-python's low-level API) on a GGUF of the checkpoint, fed granite-rt's token ids.

    The texts are tokenized by granite-rt's tokenizer for ``exported`` (so every contender embeds the same
    tokens), then packed into llama_decode calls of at most BATCH_SIZE sequences and ``opts["tokens_per_call"]``
    tokens (a longer text alone, up to ``opts["max_tokens"]``: a non-causal batch must fit one micro-batch,
    so n_batch = n_ubatch = max_tokens), CLS-pooled by llama.cpp and L2-normalised, one thread per physical
    core (llama.cpp's own default; 2 on the bench machines).
    """
    if kind != "embedder":
        raise ValueError("llama.cpp is benchmarked as an embedder only")
    import llama_cpp  # its log (model metadata, CPU features, buffer sizes) goes to the worker's log
    import numpy as np

    from bench.gguf_convert import ensure_gguf
    from granite_rt.host import physical_cores
    from granite_rt.model_folder import load_spec
    from granite_rt.tokenize import Tokenizer

    spec = load_spec(exported)
    tokenizer = Tokenizer.for_spec(exported, spec)
    per_call, capacity = opts["tokens_per_call"], opts["max_tokens"]
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(ensure_gguf(checkpoint, opts["type"])).encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load the {opts['type']} GGUF of {checkpoint}")
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = capacity
    params.n_seq_max = BATCH_SIZE
    params.n_threads = params.n_threads_batch = physical_cores()
    params.embeddings = True
    params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_CLS
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not create a context of {capacity} tokens × {BATCH_SIZE} sequences")
    batch = llama_cpp.llama_batch_init(capacity, 0, 1)
    dim = llama_cpp.llama_model_n_embd(model)

    def decode(seqs: list[list[int]]) -> np.ndarray:
        ids = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
        n = batch.n_tokens = len(ids)
        np.ctypeslib.as_array(batch.token, (n,))[:] = ids
        np.ctypeslib.as_array(batch.pos, (n,))[:] = np.concatenate([np.arange(len(s), dtype=np.int32) for s in seqs])
        np.ctypeslib.as_array(batch.n_seq_id, (n,))[:] = 1
        np.ctypeslib.as_array(batch.logits, (n,))[:] = 1   # every token is an output: pooled over
        i = 0
        for seq, s in enumerate(seqs):
            for _ in s:
                batch.seq_id[i][0] = seq
                i += 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"llama_decode failed on {len(seqs)} sequences of {n} tokens")
        return np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(ctx, seq), (dim,)).copy()
                         for seq in range(len(seqs))])

    def embed(texts):
        seqs = [e.ids for e in tokenizer.encode(texts)]
        if max(len(s) for s in seqs) > capacity:
            raise ValueError(f"a text of {max(len(s) for s in seqs)} tokens: more than this context's {capacity}")
        out, group = [], []
        for s in seqs:
            if group and (len(group) == BATCH_SIZE or sum(map(len, group)) + len(s) > per_call):
                out.append(decode(group))
                group = []
            group.append(s)
        out.append(decode(group))
        vectors = np.concatenate(out)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    embed.precision = {"f16": "fp16", "q8_0": "int8"}[opts["type"]]
    embed.handles = (model, ctx, batch)  # the context lives as long as the call
    return embed


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
