"""The runtime on Ray: batch inference on Ray Data, replicated serving on Ray Serve.

``embed(dataset, model, column="text")`` and ``rerank(dataset, model)`` add a column to a
``ray.data.Dataset`` with ``map_batches`` over a callable class: each actor loads one Embedder or
Reranker once and runs it on as many threads as the CPUs Ray reserved for it (``num_cpus``). A Ray
batch of ``batch_rows`` rows is the window within which texts are length-sorted; each model call
takes at most ``batch_size`` rows and the runtime's token budget (granite_rt.batching.MAX_BATCH_TOKENS).
An actor that dies is restarted and its task retried (Ray Data's default for actor pools).

``RayEngine`` / ``embed_shards`` run embed-corpus' planned shards through the same actors: one read task per shard
reads it from its planned position on the driver's node (the input need not be on the workers); the
driver keeps each row once by its row number (a retried task may deliver rows again) and hands back
a shard when all its rows are in, for the job to commit.

``serve_app(embedder=..., reranker=...)`` is ``granite-rt serve``'s app (granite_rt.server.app) as a
Ray Serve deployment; replicas, autoscaling and actor options are Ray Serve's own.

Needs the ``ray`` extra: ``pip install 'granite-rt[ray]'``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from granite_rt.corpus import (TRUNCATED_COLUMN, VECTOR_COLUMN, Corpus, ModelOptions, Plan, Shard, VectorOptions,
                               encode_arrow, shard_table)
from granite_rt.embedder import Embedder
from granite_rt.errors import CorpusError
from granite_rt.reranker import Reranker
from granite_rt.tokenize import check_texts

ROW_COLUMN = "__granite_rt_row"
SHARD_COLUMN = "__granite_rt_shard"


def assigned_cpus() -> int:
    """The CPUs Ray reserved for the calling actor (at least 1): the threads its model runs on."""
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # noqa: BLE001 - outside a Ray worker
        cpus = 1
    return max(1, int(cpus))


def _with_threads(model: ModelOptions) -> ModelOptions:
    return model if model.threads is not None else dataclasses.replace(model, threads=assigned_cpus())


class EmbedBatches:
    """Ray Data callable class: one Embedder per actor; appends the vector and ``truncated`` columns."""

    def __init__(self, model: ModelOptions, column: str, options: VectorOptions, output_column: str = VECTOR_COLUMN,
                 expected_file: str | None = None) -> None:
        self.embedder = _with_threads(model).load()
        if expected_file is not None and self.embedder.info["file"] != expected_file:
            raise CorpusError(f"this actor loaded {self.embedder.info['file']} of {model.model}, the job was planned "
                              f"with {expected_file}: every actor must run the same artifact")
        self.column, self.options, self.output_column = column, options, output_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = check_texts(batch.column(self.column).to_pylist(), f"column {self.column!r}")
        vectors, truncated = encode_arrow(self.embedder, texts, self.options)
        return batch.append_column(self.output_column, vectors).append_column(TRUNCATED_COLUMN, truncated)


class RerankBatches:
    """Ray Data callable class: one Reranker per actor; appends the score of each (query, document) row."""

    def __init__(self, model: ModelOptions, query_column: str, document_column: str, output_column: str,
                 activation: str, max_query_tokens: int | None, batch_size: int) -> None:
        self.reranker = _with_threads(model).load(Reranker)
        self.query_column, self.document_column, self.output_column = query_column, document_column, output_column
        self.activation, self.max_query_tokens, self.batch_size = activation, max_query_tokens, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        queries = batch.column(self.query_column).to_pylist()
        documents = batch.column(self.document_column).to_pylist()
        scores = self.reranker.predict(list(zip(queries, documents)), batch_size=self.batch_size,
                                       activation=self.activation, max_query_tokens=self.max_query_tokens)
        return batch.append_column(self.output_column, pa.array(np.asarray(scores, dtype=np.float32)))


def embed(dataset: ray.data.Dataset, model: str, *, column: str = "text", output_column: str = VECTOR_COLUMN,
          precision: str = "float32", truncate_dim: int | None = None, normalize: bool = True,
          ranges: np.ndarray | None = None, batch_rows: int = 1024, batch_size: int = 32, backend: str = "auto",
          device: str = "auto", dtype: str = "auto", num_cpus: float = 1, actors: int | tuple[int, int] | None = None,
          **ray_remote_args: Any) -> ray.data.Dataset:
    """``dataset`` with ``output_column`` (fixed-size list of the ``precision`` dtype) and ``truncated`` added.

    ``actors``: how many Embedder actors (an int, or (min, max) for Ray's autoscaling pool; None: Ray
    decides); each reserves ``num_cpus`` CPUs and runs its model on that many threads. ``ray_remote_args``
    go to the actors (``num_gpus``, ``resources``, ``max_restarts``, ...).
    """
    options = VectorOptions(precision, truncate_dim, normalize, batch_size, ranges)
    options.check()
    return dataset.map_batches(
        EmbedBatches, fn_constructor_kwargs={"model": ModelOptions(model, backend, device, dtype),
                                             "column": column, "options": options, "output_column": output_column},
        batch_size=batch_rows, batch_format="pyarrow", num_cpus=num_cpus, compute=actor_pool(actors),
        **ray_remote_args)


def rerank(dataset: ray.data.Dataset, model: str, *, query_column: str = "query", document_column: str = "document",
           output_column: str = "score", activation: str = "auto", max_query_tokens: int | None = None,
           batch_rows: int = 1024, batch_size: int = 32, backend: str = "auto", device: str = "auto",
           dtype: str = "auto", num_cpus: float = 1, actors: int | tuple[int, int] | None = None,
           **ray_remote_args: Any) -> ray.data.Dataset:
    """``dataset`` of (query, document) rows with ``output_column``: ``Reranker.predict``'s float32 score."""
    return dataset.map_batches(
        RerankBatches, fn_constructor_kwargs={
            "model": ModelOptions(model, backend, device, dtype), "query_column": query_column,
            "document_column": document_column, "output_column": output_column, "activation": activation,
            "max_query_tokens": max_query_tokens, "batch_size": batch_size},
        batch_size=batch_rows, batch_format="pyarrow", num_cpus=num_cpus, compute=actor_pool(actors),
        **ray_remote_args)


def actor_pool(actors: int | tuple[int, int] | None) -> ray.data.ActorPoolStrategy:
    """A fixed pool of ``actors``, an autoscaling one of (min, max), or None: from one to as many as fit."""
    if actors is None:
        return ray.data.ActorPoolStrategy(min_size=1)
    if isinstance(actors, tuple):
        return ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1])
    return ray.data.ActorPoolStrategy(size=actors)


# ------------------------------------------------------------------------------------ embed-corpus

class _ShardSource(Datasource):
    """One read task per planned shard; every task runs on the driver's node, where the input is."""

    def __init__(self, corpus: Corpus, plan: Plan, shards: Sequence[Shard]) -> None:
        super().__init__()
        self.corpus, self.id_type, self.shards = corpus, plan.id_type, list(shards)

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        return [ReadTask(functools.partial(_read_shard, self.corpus, self.id_type, shard),
                         BlockMetadata(num_rows=shard.rows, size_bytes=None, exec_stats=None, input_files=None))
                for shard in self.shards]


def _read_shard(corpus: Corpus, id_type: str, shard: Shard) -> list[pa.Table]:
    ids, texts = corpus.read(shard)
    return [pa.table({"id": pa.array(ids, type=pa.int64() if id_type == "int64" else pa.string()),
                      "text": pa.array(texts, type=pa.string()),
                      ROW_COLUMN: pa.array(np.arange(shard.start, shard.start + shard.rows), type=pa.int64()),
                      SHARD_COLUMN: pa.array(np.full(shard.rows, shard.index), type=pa.int64())})]


class _ShardRows:
    """The rows of one shard as they come back, each row number kept once."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.seen = np.zeros(shard.rows, dtype=bool)
        self.parts: list[pa.Table] = []

    def add(self, part: pa.Table) -> None:
        rows = part.column(ROW_COLUMN).to_numpy() - self.shard.start
        _, first = np.unique(rows, return_index=True)
        keep = np.zeros(len(rows), dtype=bool)
        keep[first] = True
        keep &= ~self.seen[rows]
        self.seen[rows[keep]] = True
        self.parts.append(part.filter(pa.array(keep)))

    @property
    def complete(self) -> bool:
        return bool(self.seen.all())

    def table(self) -> pa.Table:
        return pa.concat_tables(self.parts).sort_by(ROW_COLUMN)


def embed_shards(corpus: Corpus, plan: Plan, shards: Sequence[Shard], model: ModelOptions, options: VectorOptions,
                 *, expected_file: str | None = None, address: str | None = None,
                 actors: int | None = None) -> Iterator[tuple[Shard, pa.Table]]:
    """(shard, table of id, vector, truncated) for each of ``shards``, as each completes (any order).

    Uses the Ray this process is connected to; else connects to ``address`` (None: starts a local
    Ray) and disconnects at the end. ``actors`` Embedder actors of ``model.threads`` CPUs each (default 1); None: as many as
    the cluster's CPUs allow.
    """
    started = _connect(address)
    try:
        cpus = model.threads or 1
        count = actors or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        # Reading costs little next to embedding; read tasks reserve no CPU, or actors holding every
        # CPU would starve them, and at most one per actor runs at once (memory: a few shards).
        dataset = ray.data.read_datasource(_ShardSource(corpus, plan, shards), num_cpus=0, concurrency=count)
        dataset = dataset.map_batches(
            EmbedBatches, fn_constructor_kwargs={"model": model, "column": "text", "options": options,
                                                 "expected_file": expected_file},
            batch_size=None, batch_format="pyarrow", num_cpus=cpus, compute=actor_pool(count))
        by_index = {s.index: s for s in shards}
        pending: dict[int, _ShardRows] = {}
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            indices = batch.column(SHARD_COLUMN).to_numpy()
            for index in np.unique(indices):
                if int(index) not in by_index:
                    continue   # a late duplicate of a shard already handed back
                rows = pending.setdefault(int(index), _ShardRows(by_index[int(index)]))
                rows.add(batch.filter(pa.array(indices == index)))
                if rows.complete:
                    table = rows.table()
                    del pending[int(index)], by_index[int(index)]
                    yield rows.shard, shard_table(plan, table.column("id").to_pylist(),
                                                  table.column(VECTOR_COLUMN).combine_chunks(),
                                                  table.column(TRUNCATED_COLUMN).combine_chunks())
        if by_index:
            raise CorpusError(f"Ray returned no or partial rows for shards {sorted(by_index)[:5]}")
    finally:
        if started:
            ray.shutdown()


@dataclasses.dataclass(frozen=True)
class RayEngine:
    """embed-corpus's engine on Ray (``embed_corpus(..., engine=RayEngine(address, actors))``): the job's
    shards through ``embed_shards``, each actor loading the artifact the job fingerprinted."""

    address: str | None = None
    actors: int | None = None

    def __call__(self, corpus: Corpus, plan: Plan, shards: Sequence[Shard], embedder: Embedder,
                 model: ModelOptions, vectors: VectorOptions) -> Iterator[tuple[Shard, pa.Table]]:
        info = embedder.info
        placed = dataclasses.replace(model, backend=info["backend"], device=info["device"], dtype=info["dtype"])
        return embed_shards(corpus, plan, shards, placed, vectors, expected_file=info["file"], address=self.address,
                            actors=self.actors)


def _connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: start a local one); True when this call connected,
    so the job disconnects (or stops its local Ray) at the end."""
    if ray.is_initialized():
        return False
    ray.init(address=address, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False   # embed-corpus draws its own
    return True


# ------------------------------------------------------------------------------------------ serve

def serve_app(embedder: str | None = None, reranker: str | None = None, *, config: Any = None,
              backend: str = "auto", device: str = "auto", dtype: str = "auto", batch_size: int = 32,
              num_replicas: int | str | None = None, autoscaling_config: dict | None = None,
              ray_actor_options: dict | None = None, name: str = "granite-rt", **deployment_options: Any):
    """A Ray Serve application answering ``granite-rt serve``'s HTTP API (TEI, OpenAI, /metrics).

    Each replica builds the server's app (granite_rt.server.app.create_app) with its own models, on
    as many threads as the CPUs in ``ray_actor_options`` (default 1). ``config`` is a
    ``ServerConfig`` (API key, limits, batching); host and port are Ray Serve's HTTP options.
    ``num_replicas`` or ``autoscaling_config`` and ``deployment_options`` go to ``serve.deployment``.
    Run it with ``serve.run(serve_app(...))``.
    """
    from ray import serve

    if not (embedder or reranker):
        raise ValueError("serve_app needs an embedder, a reranker or both")
    actor_options = {"num_cpus": 1, **(ray_actor_options or {})}
    load = {"backend": backend, "device": device, "dtype": dtype}

    def build_app():
        from granite_rt.server.app import ServerConfig, create_app
        from granite_rt.server.models import EmbeddingService, RerankService

        threads = assigned_cpus()
        embedding = EmbeddingService(Embedder(embedder, **load, threads=threads), embedder, batch_size) \
            if embedder else None
        rerank_service = RerankService(Reranker(reranker, **load, threads=threads), reranker, batch_size) \
            if reranker else None
        return create_app(config or ServerConfig(), embedding, rerank_service)

    @serve.ingress(build_app)
    class GraniteRT:
        """One replica: the server's app with its own models."""

    if autoscaling_config is not None:
        deployment_options["autoscaling_config"] = autoscaling_config
    elif num_replicas is not None:
        deployment_options["num_replicas"] = num_replicas
    return serve.deployment(GraniteRT, name=name, ray_actor_options=actor_options, **deployment_options).bind()
