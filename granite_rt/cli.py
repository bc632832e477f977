"""``granite-rt``: embed, embed-corpus, rerank, export, bundle, info, eval, bench and serve from the command line.

The export stage and the server are imported only when their command runs, so ``granite-rt --help``
works without torch or the server extra. Exit codes: 0 success, 2 usage error, 1 runtime
failure; an error is one line on stderr (the traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from granite_rt import host, tune
from granite_rt.arguments import json_object
from granite_rt.corpus import ROWS_PER_SHARD, Columns, VectorOptions, embed_corpus, local_engine
from granite_rt.bundle import bundle
from granite_rt.embedder import Embedder
from granite_rt.folder_manifest import trusted_manifest, write_manifest
from granite_rt.int8_gate import parse_bounds
from granite_rt.model_folder import MANIFEST, load_spec, verify_artifact
from granite_rt.quantize_folder import quantize_folder
from granite_rt.errors import CollectionError, WrongKindError, one_line
from granite_rt.eval.collections import load_collection
from granite_rt.eval.runner import Subsample, evaluate, variant_names
from granite_rt.model_folder import resolve_model
from granite_rt.output import PRECISIONS
from granite_rt.report import info_data, info_report
from granite_rt.reranker import Reranker

PROG = "granite-rt"
# The export stage's dependencies: a missing one means the extra is not installed.
EXPORT_MODULES = {"granite_export", "torch", "transformers", "onnx", "onnxscript", "nncf", "sentence_transformers"}
SERVER_MODULES = {"starlette", "uvicorn"}


class UsageError(Exception):
    """A command line that cannot be run as given (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


@dataclass(frozen=True)
class LabelledTexts:
    """Input texts with the ids written next to their outputs."""

    ids: list[str | int]
    texts: list[str]


# ---------------------------------------------------------------------------------------- input

def read_texts(args_texts: Sequence[str], input_path: str | None, input_format: str | None) -> LabelledTexts:
    """Texts from arguments, a .txt (one per line) or .jsonl file (``text`` field), or stdin."""
    if args_texts and input_path:
        raise UsageError("give texts as arguments or with --input, not both")
    if args_texts:
        return LabelledTexts(list(range(len(args_texts))), list(args_texts))
    if input_path is None and sys.stdin.isatty():
        raise UsageError("no input: give texts as arguments, --input FILE, or pipe text into stdin")
    if input_path in (None, "-"):
        source, content = "stdin", sys.stdin.read()
    else:
        source = input_path
        try:
            content = Path(input_path).read_text(encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot read --input {input_path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise UsageError(f"--input {input_path} is not UTF-8 text: {err}") from None
    fmt = input_format or ("jsonl" if source.endswith(".jsonl") else "txt")
    labelled = _parse_jsonl(content, source) if fmt == "jsonl" else _parse_lines(content)
    if not labelled.texts:
        raise UsageError(f"no texts in {source}")
    return labelled


def _parse_lines(content: str) -> LabelledTexts:
    lines = content.splitlines()
    return LabelledTexts(list(range(len(lines))), lines)


def _parse_jsonl(content: str, source: str) -> LabelledTexts:
    """One JSON object per line with a string ``text`` and an optional ``id``; blank lines skipped."""
    ids: list[str | int] = []
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(line, f"{source} line {number}", UsageError)
        if not isinstance(record.get("text"), str):
            raise UsageError(f"{source} line {number} needs a string field \"text\"")
        ids.append(record.get("id", len(texts)))
        texts.append(record["text"])
    return LabelledTexts(ids, texts)


# ------------------------------------------------------------------------------------- commands

def cmd_embed(args: argparse.Namespace) -> int:
    """Embed texts; write .npy or JSONL (id + embedding), or print a summary."""
    out_format = _output_format(args.output, args.format)
    if args.json and out_format is not None:
        raise UsageError("--json prints the summary as JSON; with --output FILE use --format jsonl for the vectors")
    inputs = read_texts(args.texts, args.input, args.input_format)
    embedder = _load(Embedder, args)
    extra = {"precision": args.precision} if args.precision else {}
    start = time.perf_counter()
    vectors = embedder.encode(inputs.texts, batch_size=args.batch_size, normalize=not args.no_normalize,
                              truncate_dim=args.truncate_dim, show_progress_bar=_progress(args, len(inputs.texts)),
                              long_text=args.long_text, window_tokens=args.window_tokens,
                              window_stride=args.window_stride, **extra)
    seconds = time.perf_counter() - start
    if out_format == "npy":
        import numpy as np

        np.save(args.output, vectors)
    elif out_format == "jsonl":
        with _open_output(args.output) as out:
            for ident, vector in zip(inputs.ids, vectors):
                out.write(json.dumps({"id": ident, "embedding": vector.tolist()}) + "\n")
    elif args.json:
        print(json.dumps({"texts": len(inputs.texts), "shape": list(vectors.shape), "dtype": str(vectors.dtype),
                          "seconds": round(seconds, 4), "info": embedder.info}, indent=2, default=str))
    else:
        _print_summary(inputs, vectors, seconds, embedder.info)
    if args.output and not args.quiet:
        print(f"wrote {len(inputs.texts)} embeddings {tuple(vectors.shape)} {vectors.dtype} to {args.output} "
              f"in {seconds:.2f} s", file=sys.stderr)
    return 0


def _output_format(output: str | None, fmt: str | None) -> str | None:
    """npy | jsonl | None (summary), from --format or the --output suffix."""
    if fmt is None and output:
        fmt = {".npy": "npy", ".jsonl": "jsonl"}.get(Path(output).suffix.lower())
        if fmt is None:
            raise UsageError(f"cannot tell the format of --output {output}: name it .npy or .jsonl, or pass --format")
    if fmt == "npy" and not output:
        raise UsageError("--format npy needs --output FILE (binary output is not printed)")
    return fmt


class _open_output:
    """A text file to write, or stdout for '-' / no path; closed only if we opened it."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __enter__(self):
        self.stream = sys.stdout if self.path in (None, "-") else open(self.path, "w", encoding="utf-8")
        return self.stream

    def __exit__(self, *exc) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


# Commands of the model kinds, for errors that say which command loads a model.
KIND_COMMAND = {"embedder": "embed", "reranker": "rerank"}


def _load(cls, args: argparse.Namespace):
    """``cls(MODEL, --backend, --device, --dtype)``; a model of the other kind names the command that runs it."""
    try:
        return cls(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    except WrongKindError as err:
        raise _wrong_kind(err, f"use '{PROG} {KIND_COMMAND[err.kind]}'") from err


def _wrong_kind(err, remedy: str) -> RuntimeError:
    """'MODEL is a reranker: REMEDY', the CLI's wording of a WrongKindError."""
    return RuntimeError(f"{err.model} is {'an' if err.kind == 'embedder' else 'a'} {err.kind}: {remedy}")


def model_summary(info: dict[str, Any], indent: str = "  ") -> str:
    """The few facts of ``Embedder.info`` / ``Reranker.info`` a person reads, one aligned line each
    (the full dict: ``--json``)."""
    kind = info.get("kind")
    shape = (f"{info.get('dim')} dimensions" + (", normalized" if info.get("normalize") else "")
             if kind == "embedder" else f"{info.get('num_labels')} label(s), {info.get('activation')} activation")
    rows = [("model", f"{info.get('model')} ({kind}, {shape}, max {info.get('max_length')} tokens)"),
            ("runs on", f"{info.get('device')} with {info.get('backend')}, {info.get('dtype')}: {info.get('file')}"),
            ("why", info.get("why"))]
    rows += [("fallback", f) for f in info.get("fallbacks") or ()]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{indent}{key:<{width}}  {value}" for key, value in rows)


def _print_summary(inputs: LabelledTexts, vectors, seconds: float, info) -> None:
    shown = 20
    print(f"{len(inputs.texts)} texts -> {tuple(vectors.shape)} {vectors.dtype} in {seconds:.2f} s")
    print(model_summary(info))
    for ident, text, vector in list(zip(inputs.ids, inputs.texts, vectors))[:shown]:
        head = ", ".join(f"{v:.4f}" if vectors.dtype.kind == "f" else str(v) for v in vector[:4])
        print(f"#{ident} [{head}, ...] {_clip(text)}")
    if len(inputs.texts) > shown:
        print(f"... {len(inputs.texts) - shown} more; write them all with --output FILE.npy|FILE.jsonl")


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def cmd_rerank(args: argparse.Namespace) -> int:
    """Rank documents for a query: ``- #id (score): text`` lines, or JSON with --json."""
    inputs = read_texts(args.documents, args.input, args.input_format)
    reranker = _load(Reranker, args)
    ranking = reranker.rank(args.query, inputs.texts, top_k=args.top_k, return_documents=True,
                            batch_size=args.batch_size, activation="identity" if args.raw_scores else "auto",
                            max_query_tokens=args.max_query_tokens)
    if args.json:
        print(json.dumps([{"corpus_id": inputs.ids[r["corpus_id"]], "score": float(r["score"]), "text": r["text"]}
                          for r in ranking], ensure_ascii=False, indent=2))
    else:
        for r in ranking:
            print(f"- #{inputs.ids[r['corpus_id']]} ({r['score']:.2f}): {r['text']}")
    return 0


def cmd_embed_corpus(args: argparse.Namespace) -> int:
    """Embed a corpus (file, folder or glob of .jsonl/.parquet/.csv/.txt) into Parquet shards; resumable."""
    try:
        import pyarrow  # noqa: F401
        if args.engine == "ray":
            import ray  # noqa: F401
    except ModuleNotFoundError as err:
        raise _ExtraMissing("ray", err.name) from None
    import numpy as np

    ranges = None
    if args.ranges:
        try:
            ranges = np.load(args.ranges)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read --ranges {args.ranges}: {err}") from None
    if args.engine == "local" and (args.ray_address or args.actors):
        raise UsageError("--ray-address and --actors need --engine ray")
    if args.engine == "ray":
        from granite_rt.ray import RayEngine   # the ray extra

        engine = RayEngine(args.ray_address, args.actors)
    else:
        engine = local_engine
    result = embed_corpus(
        args.input, args.out, args.model,
        columns=Columns(args.text_column, args.id_column, args.title_column),
        vectors=VectorOptions(args.precision, args.truncate_dim, not args.no_normalize, args.batch_size, ranges),
        backend=args.backend, device=args.device, dtype=args.dtype, threads=args.threads,
        rows_per_shard=args.rows_per_shard, engine=engine, progress=sys.stderr.isatty() and not args.quiet)
    if not args.quiet:
        kept = f", {result.adopted_shards} kept from an earlier run" if result.adopted_shards else ""
        cut = f"; {result.truncated} truncated at the model's max length" if result.truncated else ""
        print(f"{args.out}: {result.rows} rows in {result.shards} shards ({result.embedded_rows} embedded now"
              f"{kept}) in {result.seconds:.1f} s{cut}", file=sys.stderr)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Copy what one placement loads (artifact, tokenizer, configs, manifest) into --out, for shipping in an app."""
    made = bundle(args.model, args.out, backend=args.backend, dtype=args.dtype)
    if not args.quiet:
        print(f"wrote {made.folder}: {made.artifact.backend} {made.artifact.precision} ({made.artifact.path}), "
              f"{len(made.files)} files, {made.size / 1e6:.1f} MB", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Devices and backends available here, and where MODEL would run."""
    if args.json:
        print(json.dumps(info_data(args.model), indent=2, default=str))
        return 0
    print(info_report(args.model))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval fidelity: run a collection through every artifact of MODEL this machine can run and compare
    quality (nDCG@10, Recall@100) and outputs (cosine, Kendall tau) with the fp32 or torch reference."""
    try:
        collection = load_collection(args.collection)
        names = variant_names(args.artifacts)
    except (CollectionError, ValueError) as err:
        raise UsageError(str(err)) from None
    log = None if args.quiet else (lambda message: print(f"[eval] {message}", file=sys.stderr, flush=True))
    report = evaluate(args.model, collection, artifacts=names, reference=args.reference,
                      subsample=Subsample(args.queries, args.docs, args.seed) if args.queries or args.docs else None,
                      retriever=args.retriever, reference_model=args.reference_model, device=args.device,
                      batch_size=args.batch_size, log=log)
    print(report.to_markdown(), end="")
    if args.json == "-":
        print(report.to_json())
    elif args.json:
        Path(args.json).write_text(report.to_json() + "\n", encoding="utf-8")
    return 0 if any(r.skipped is None for r in report.rows) else 1


def cmd_tune(args: argparse.Namespace) -> int:
    """Time every CPU placement MODEL allows here within the fidelity bounds; dtype="auto" then runs the fastest."""
    folder = resolve_model(args.model)
    decision, saved = tune.tune_folder(folder, load_spec(folder), host.cache_dir(), budget_s=args.budget,
                                       log=lambda line: print(line, file=sys.stderr, flush=True))
    print(tune.format_decision(decision, saved))
    return 0 if decision.best() is not None else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the TEI- and OpenAI-compatible HTTP server until SIGINT/SIGTERM."""
    if not (args.embedder or args.reranker):
        raise UsageError("serve needs --embedder MODEL, --reranker MODEL or both")
    try:
        from granite_rt.server import serve
        from granite_rt.server.app import ServerConfig
        from granite_rt.server.batcher import BatcherConfig
        from granite_rt.server.schemas import Limits
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in SERVER_MODULES:
            raise _ExtraMissing("server", err.name) from None
        raise
    api_key = args.api_key or os.environ.get("GRANITE_RT_API_KEY") or None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(f"serving on {args.host} without an API key: anyone who can reach this port can use it "
                      "(set GRANITE_RT_API_KEY or --api-key)")
    config = ServerConfig(
        host=args.host, port=args.port, api_key=api_key,
        auto_truncate=args.auto_truncate, model_id=args.model_id,
        limits=Limits(max_request_bytes=args.max_request_bytes, max_inputs=args.max_client_batch_size),
        batcher=BatcherConfig(max_batch_tokens=args.max_batch_tokens, max_wait_s=args.max_wait_ms / 1000,
                              max_pending=args.max_concurrent_requests, request_timeout_s=args.request_timeout),
        log_level="warning" if args.quiet else args.log_level,
    )
    try:
        serve(config, embedder=args.embedder, reranker=args.reranker, backend=args.backend, device=args.device,
              dtype=args.dtype, batch_size=args.batch_size, bucket_steps=args.bucket_steps or None)
    except WrongKindError as err:
        raise _wrong_kind(err, f"serve it with --{err.kind}") from err
    return 0


class _ExtraMissing(Exception):
    def __init__(self, extra: str, module: str | None) -> None:
        super().__init__(f"this command needs the {extra} extra (missing module {module}): "
                         f"pip install 'granite-rt[{extra}]'")


def run_export(argv: list[str]) -> int:
    """``granite-rt export ...`` is ``python -m granite_export ...``."""
    try:
        from granite_export.__main__ import main as export_main

        return int(export_main(argv) or 0)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in EXPORT_MODULES:
            raise _ExtraMissing("export", err.name) from None
        raise


def run_bench(argv: list[str]) -> int:
    """Delegate to bench/ of a source checkout (``python -m bench`` or ``bench/run.py``)."""
    root = Path(__file__).resolve().parents[1]
    bench = root / "bench"
    if (bench / "__main__.py").exists():
        command = [sys.executable, "-m", "bench", *argv]
    elif (bench / "run.py").exists():
        command = [sys.executable, str(bench / "run.py"), *argv]
    else:
        raise RuntimeError(f"the benchmarks are not part of this installation (no {bench}); "
                           "run 'granite-rt bench' from a source checkout of granite-rt")
    return subprocess.call(command, cwd=root)


# Commands whose arguments belong to another program's parser.
PASSTHROUGH: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "export": (run_export, "export a checkpoint to ONNX/OpenVINO (see 'granite-rt export --help')"),
    "bench": (run_bench, "benchmarks, from a source checkout (see 'granite-rt bench --help')"),
}


# Global flags a delegated command's own parser also takes: given before the command, they are passed on.
FORWARDED_FLAGS = {"export": ("--debug", "--quiet")}


def _forwarded_flags(command: str, args: argparse.Namespace, rest: list[str]) -> list[str]:
    """``granite-rt --debug export ...`` means ``granite-rt export ... --debug`` (docs/cli.md: before or after)."""
    return [flag for flag in FORWARDED_FLAGS.get(command, ()) if getattr(args, flag[2:]) and flag not in rest]


# -------------------------------------------------------------------------------------- parsing

def cmd_quantize(args: argparse.Namespace) -> int:
    """Write onnx/model_qint8.onnx and openvino/openvino_model_qint8_quantized.xml (static INT8, the export's
    recipe, batch-invariant) from the folder's fp32 ONNX graph, check them with the INT8 gate against fp32 and
    record them in granite_rt.json (written for a folder without one, every file hashed as it is now).
    Needs pip install 'granite-rt[quantize]' (no torch)."""
    try:
        gate = parse_bounds(args.int8_gate)
    except ValueError as err:
        raise UsageError(str(err)) from None
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        manifest = quantize_folder(args.folder, formats, args.calibration, args.calibration_samples, gate,
                                   args.force, log)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except ModuleNotFoundError as err:
        raise RuntimeError(f"granite-rt quantize needs {err.name}: pip install 'granite-rt[quantize]'") from err
    for entry in manifest["artifacts"]:
        if entry.get("precision") == "int8" and (entry.get("gate") or {}).get("missed"):
            print(f"{PROG} quantize: WARNING: {entry['path']}: {'; '.join(entry['gate']['missed'])}: written but NOT "
                  "recommended (dtype='auto' skips it)", file=sys.stderr)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """Write granite_rt.json for a folder you trust: every artifact's files hashed as they are now (files from
    a Hugging Face cache snapshot are first checked against the Hub's sha256), so later loads detect any change."""
    folder = Path(args.folder).expanduser().resolve()
    if (folder / MANIFEST).exists() and not args.force:
        raise UsageError(f"{folder / MANIFEST} exists; pass --force to replace it")
    for artifact in load_spec(folder).artifacts if not (folder / MANIFEST).exists() else ():
        verify_artifact(folder, artifact)  # what can be checked (Hub sha256, IR sizes) must pass first
    path = write_manifest(folder, trusted_manifest(folder, "granite-rt manifest"))
    if not args.quiet:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Embed, rerank, export, bundle, inspect, evaluate, benchmark and serve "
                                            "Granite embedding models without torch.")
    _global_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    flags = _Parser(add_help=False)
    _global_flags(flags, default=argparse.SUPPRESS)
    model = _Parser(add_help=False)
    model.add_argument("--backend", default="auto", help="auto | onnx | openvino (default: auto)")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | ... (default: auto)")
    model.add_argument("--dtype", default="auto", help="compute precision: auto | fp32 | fp16 | bf16 | int8 | int8+bf16")
    model.add_argument("--batch-size", type=positive_int, default=32, help="inputs per model call (default 32)")
    inputs = _Parser(add_help=False)
    inputs.add_argument("--input", metavar="FILE", help=".txt (one text per line) or .jsonl (a \"text\" field); - for stdin")
    inputs.add_argument("--input-format", choices=("txt", "jsonl"), help="override the format guessed from --input's suffix")

    embed = sub.add_parser("embed", parents=[flags, model, inputs], help="embed texts",
                           description=cmd_embed.__doc__)
    embed.add_argument("model", metavar="MODEL", help="exported folder, IBM Hub layout folder or Hub repo id")
    embed.add_argument("texts", metavar="TEXT", nargs="*", default=[], help="texts to embed (else --input or stdin)")
    embed.add_argument("--output", metavar="FILE", help="write .npy or .jsonl; - for JSONL on stdout")
    embed.add_argument("--format", choices=("npy", "jsonl"), help="output format (default: from --output's suffix)")
    embed.add_argument("--precision", choices=PRECISIONS, help="output format of the vectors (default float32)")
    embed.add_argument("--truncate-dim", type=positive_int, metavar="N", help="Matryoshka: keep the first N dimensions")
    embed.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the vectors")
    embed.add_argument("--long-text", choices=("truncate", "window"), default="truncate",
                       help="texts over the max length: truncate (default, as sentence-transformers) or window "
                            "(overlapping windows, mean-pooled into one vector per text)")
    embed.add_argument("--window-tokens", type=positive_int, metavar="N", help="window length (default 512)")
    embed.add_argument("--window-stride", type=positive_int, metavar="N", help="window overlap in tokens")
    embed.add_argument("--json", action="store_true",
                       help="without --output: print the summary as JSON, with the model's full info")
    embed.set_defaults(run=cmd_embed, positional_rest="texts")

    rerank = sub.add_parser("rerank", parents=[flags, model, inputs], help="rank documents for a query",
                            description=cmd_rerank.__doc__)
    rerank.add_argument("model", metavar="MODEL", help="exported reranker folder or Hub repo id")
    rerank.add_argument("documents", metavar="DOC", nargs="*", default=[], help="documents to rank (else --input or stdin)")
    rerank.add_argument("--query", required=True, help="the query")
    rerank.add_argument("--top-k", type=positive_int, metavar="K", help="print only the K best")
    rerank.add_argument("--json", action="store_true", help="print JSON instead of lines")
    rerank.add_argument("--raw-scores", action="store_true", help="print logits (no sigmoid/activation)")
    rerank.add_argument("--max-query-tokens", type=positive_int, metavar="N",
                        help="cut the query to N tokens before pair truncation (the model card evaluates with 64)")
    rerank.set_defaults(run=cmd_rerank, positional_rest="documents")

    corpus = sub.add_parser("embed-corpus", parents=[flags, model], help="embed a corpus into Parquet shards (resumable)",
                            description=cmd_embed_corpus.__doc__)
    corpus.add_argument("model", metavar="MODEL", help="exported folder, IBM Hub layout folder or Hub repo id")
    corpus.add_argument("input", metavar="INPUT", help=".jsonl/.parquet/.csv/.txt file, a folder of them, or a glob")
    corpus.add_argument("--out", required=True, metavar="DIR", help="output folder: part-NNNNN.parquet + _manifest.json")
    corpus.add_argument("--text-column", default="text", help="column with the text (default: text)")
    corpus.add_argument("--id-column", help="column with the id (default: id if present, else the row number)")
    corpus.add_argument("--title-column", help="column with a title, embedded as 'title text'")
    corpus.add_argument("--precision", choices=PRECISIONS, default="float32", help="output format of the vectors")
    corpus.add_argument("--ranges", metavar="FILE.npy", help="int8/uint8 calibration: a (2, dim) array of minima/maxima")
    corpus.add_argument("--truncate-dim", type=positive_int, metavar="N", help="Matryoshka: keep the first N dimensions")
    corpus.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the vectors")
    corpus.add_argument("--rows-per-shard", type=positive_int, default=ROWS_PER_SHARD, metavar="N",
                        help=f"rows per output shard, the unit of resume (default {ROWS_PER_SHARD})")
    corpus.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads of the model (local) or CPUs per Ray actor (default: all / 1)")
    corpus.add_argument("--engine", choices=("local", "ray"), default="local", help="embed here or on Ray (ray extra)")
    corpus.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: a local Ray)")
    corpus.add_argument("--actors", type=positive_int, metavar="N", help="Embedder actors on Ray (default: CPUs / threads)")
    corpus.set_defaults(run=cmd_embed_corpus)

    bundle_parser = sub.add_parser("bundle", parents=[flags], help="copy one placement of a model for an app to ship",
                            description=cmd_bundle.__doc__)
    bundle_parser.add_argument("model", metavar="MODEL", help="exported folder, IBM Hub layout folder or Hub repo id")
    bundle_parser.add_argument("--out", metavar="DIR", required=True, help="folder to write (new, empty or a previous bundle)")
    bundle_parser.add_argument("--backend", default="onnx", help="onnx | openvino (default: onnx)")
    bundle_parser.add_argument("--dtype", choices=("int8", "fp32", "fp16"), default="int8",
                        help="stored precision of the artifact (default: int8)")
    bundle_parser.set_defaults(run=cmd_bundle)

    info = sub.add_parser("info", parents=[flags], help="devices, backends and where a model would run",
                          description=cmd_info.__doc__)
    info.add_argument("model", metavar="MODEL", nargs="?", help="a model folder or Hub id to plan for")
    info.add_argument("--json", action="store_true", help="print everything as JSON (inventory, artifacts, placements)")
    info.set_defaults(run=cmd_info)

    evaluation = sub.add_parser("eval", parents=[flags], help="retrieval fidelity against the reference",
                                description=cmd_eval.__doc__)
    evaluation.add_argument("model", metavar="MODEL", help="model folder (granite-rt export / IBM Hub layout) or Hub id")
    evaluation.add_argument("--collection", metavar="PATH", required=True,
                            help="Cranfield folder (cran.all.1400, cran.qry, cranqrel) or BEIR folder (corpus.jsonl, "
                                 "queries.jsonl, qrels/test.tsv)")
    evaluation.add_argument("--artifacts", default="all runnable",
                            help="comma-separated backend/precision names, e.g. onnx/fp32,openvino/int8 "
                                 "(default: every CPU variant this machine can run)")
    evaluation.add_argument("--reference", action="store_true",
                            help="add the sentence-transformers (torch) row and compare against it")
    evaluation.add_argument("--reference-model", metavar="PATH",
                            help="torch checkpoint for --reference (default: the manifest's source)")
    evaluation.add_argument("--retriever", metavar="MODEL",
                            help="reranker only: the embedder whose fp32 top-20 it reranks")
    evaluation.add_argument("--queries", type=positive_int, metavar="N", help="evaluate N random queries")
    evaluation.add_argument("--docs", type=positive_int, metavar="N",
                            help="corpus of the queries' relevant documents plus random others up to N")
    evaluation.add_argument("--seed", type=int, default=0, help="seed of --queries / --docs (default 0)")
    evaluation.add_argument("--device", default="cpu", help="device of the runtime rows (default cpu)")
    evaluation.add_argument("--batch-size", type=positive_int, default=32, help="inputs per model call (default 32)")
    evaluation.add_argument("--json", metavar="FILE", help="also write the report as JSON (- for stdout)")
    evaluation.set_defaults(run=cmd_eval)

    quant = sub.add_parser("quantize", parents=[flags], help="write batch-invariant static INT8 files into a folder",
                           description=cmd_quantize.__doc__)
    quant.add_argument("folder", metavar="FOLDER", help="model folder with an fp32 ONNX graph (e.g. IBM's Hub layout)")
    quant.add_argument("--formats", default="onnx-int8,openvino-int8", help="onnx-int8, openvino-int8 or both (default)")
    quant.add_argument("--calibration", metavar="FILE", help="calibration texts, one per line (default: shipped set)")
    quant.add_argument("--calibration-samples", type=positive_int, default=300, metavar="N",
                       help="calibration texts (or pairs) used for the INT8 scales (default 300)")
    quant.add_argument("--int8-gate", metavar="BOUNDS", help="bounds against fp32, e.g. mean_cosine=0.99,p1_cosine=0.97,"
                                                            "top10_overlap=0.9,kendall_tau=0.9 (the defaults)")
    quant.add_argument("--force", action="store_true", help="replace INT8 files written before")
    quant.set_defaults(run=cmd_quantize)

    manifest = sub.add_parser("manifest", parents=[flags], help="write granite_rt.json for a folder you trust",
                              description=cmd_manifest.__doc__)
    manifest.add_argument("folder", metavar="FOLDER", help="model folder without a manifest")
    manifest.add_argument("--force", action="store_true", help="replace an existing granite_rt.json")
    manifest.set_defaults(run=cmd_manifest)

    tune = sub.add_parser("tune", parents=[flags], help="measure where a model runs fastest on this machine",
                          description=cmd_tune.__doc__)
    tune.add_argument("model", metavar="MODEL", help="a model folder or Hub id")
    tune.add_argument("--budget", type=_non_negative_float, default=30.0, metavar="SECONDS",
                      help="no further timing rounds after this long (each placement still gets one; default 30)")
    tune.set_defaults(run=cmd_tune)

    serve = sub.add_parser("serve", parents=[flags, model], help="TEI/OpenAI-compatible HTTP server",
                           description=cmd_serve.__doc__)
    serve.add_argument("--embedder", metavar="MODEL", help="embedding model to serve")
    serve.add_argument("--reranker", metavar="MODEL", help="reranker model to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (prefer env GRANITE_RT_API_KEY: "
                                         "arguments are visible to other users in ps)")
    serve.add_argument("--model-id", help="model name reported by /info and /v1/embeddings")
    serve.add_argument("--auto-truncate", action="store_true",
                       help="truncate over-long inputs when a request does not say (default: answer 413)")
    serve.add_argument("--max-batch-tokens", type=positive_int, default=16_384, help="token budget of one model call")
    serve.add_argument("--max-wait-ms", type=_non_negative_float, default=2.0, help="how long a batch waits for more requests")
    serve.add_argument("--max-concurrent-requests", type=positive_int, default=512,
                       help="requests admitted at once; more get 429 (default 512)")
    serve.add_argument("--bucket-steps", type=int, choices=range(0, 17), default=4, metavar="N",
                       help="batch widths per doubling of length: the backends see a fixed set of shapes, so memory "
                            "stays bounded (default 4: at most 22%% padding; 0: unbucketed)")
    serve.add_argument("--max-client-batch-size", type=positive_int, default=256,
                       help="inputs per request; more get 413 (default 256)")
    serve.add_argument("--max-request-bytes", type=positive_int, default=2_000_000,
                       help="request body size; larger get 413 (default 2000000)")
    serve.add_argument("--request-timeout", type=_non_negative_float, default=30.0,
                       help="seconds before a request gets 503 (0: no timeout)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(run=cmd_serve)

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _global_flags(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress or status on stderr")


def _bounded(kind: type, what: str, low: float, high: float = float("inf")) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within [low, high], with a one-line error naming the bad value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


positive_int = _bounded(int, "a positive integer", 1)
_non_negative_float = _bounded(float, "a number >= 0", 0)
_port = _bounded(int, "a port number in 0..65535", 0, 65535)


def _progress(args: argparse.Namespace, n_inputs: int) -> bool:
    """A progress bar for inputs of more than one batch, on a terminal, unless --quiet."""
    return n_inputs > args.batch_size and sys.stderr.isatty() and not args.quiet


# ----------------------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``granite-rt`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is not None and argv[command] in PASSTHROUGH:
        args = parser.parse_args(argv[:command] + [argv[command]])
        run_passthrough = PASSTHROUGH[argv[command]][0]
        rest = argv[command + 1:] + _forwarded_flags(argv[command], args, argv[command + 1:])
        return _guarded(lambda: run_passthrough(rest), args)
    try:
        args = _parse(parser, argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return _guarded(lambda: args.run(args), args)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse, letting texts/documents follow options (``rerank M --query Q doc1 doc2``).

    argparse fills a ``nargs="*"`` positional at its first occurrence only; words that come after
    an option arrive as unrecognized arguments and are appended here, in order."""
    args, extra = parser.parse_known_args(argv)
    words = getattr(args, "positional_rest", None)
    if extra and words is not None and not any(word.startswith("-") for word in extra):
        getattr(args, words).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments for {args.command}: {' '.join(extra)}")
    return args


def _guarded(run: Callable[[], int], args: argparse.Namespace) -> int:
    """Run a command: exit code 2 for usage errors, 1 with a one-line message for failures."""
    prog = f"{PROG} {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: print(
                f"{prog}: warning: {one_line(message)}", file=sys.stderr)
            return run()
    except UsageError as err:
        print(f"{prog}: error: {err} (see '{prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, traceback with --debug
        if args.debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
