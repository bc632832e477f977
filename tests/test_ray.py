"""granite_rt.ray on a local Ray started here (``ray.init(num_cpus=2)``, shut down after the module).

embed-corpus on Ray equals the local engine bit for bit (real all-MiniLM-L6-v2, 200 Cranfield
abstracts), also when an Embedder actor is killed mid-run and Ray restarts it and retries its task;
``embed`` / ``rerank`` on a ray.data.Dataset equal the in-process models; the Ray Serve deployment
answers /embed and /rerank as the in-process models do.
"""

from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")

from granite_rt.corpus import MANIFEST, embed_corpus  # noqa: E402
from granite_rt.ray import RayEngine  # noqa: E402
from test_corpus import cranfield_docs, vectors_of, write_jsonl  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def minilm(minilm_folders):
    return minilm_folders["export"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    ids, texts = cranfield_docs(200)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    return write_jsonl(path, [{"id": i, "text": t} for i, t in zip(ids, texts)]), ids, texts


@pytest.fixture(scope="module")
def local_output(minilm, corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    embed_corpus(corpus_file[0], out, minilm, backend="onnx", dtype="fp32", rows_per_shard=25)
    return vectors_of(out)


def _embed_actor_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("EmbedBatches" in part for part in (p.info["cmdline"] or []))]


def test_ray_engine_equals_the_local_engine_bit_for_bit_after_an_actor_is_killed(minilm, corpus_file, local_output,
                                                                                 tmp_path):
    killed: list[int] = []

    def kill_an_actor(index, done, total):
        if not killed:
            pids = _embed_actor_pids()
            assert pids, "no Embedder actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    out = tmp_path / "out"
    result = embed_corpus(corpus_file[0], out, minilm, backend="onnx", dtype="fp32", rows_per_shard=25,
                          engine=RayEngine(actors=2), on_shard=kill_an_actor)
    assert killed and result.embedded_rows == 200 and result.shards == 8
    ids, vectors, truncated = vectors_of(out)
    local_ids, local_vectors, local_truncated = local_output
    assert ids == local_ids == corpus_file[1]                   # each row once, in input order
    assert vectors.dtype == np.float32 and np.array_equal(vectors, local_vectors)
    assert np.array_equal(truncated, local_truncated)
    assert json.loads((out / MANIFEST).read_text())["complete"]


def test_a_local_job_killed_half_way_is_finished_on_ray(minilm, corpus_file, local_output, tmp_path):
    out = tmp_path / "out"

    class Stop(Exception):
        pass

    def stop_after_three(index, done, total):
        if done >= 75:
            raise Stop
    with pytest.raises(Stop):
        embed_corpus(corpus_file[0], out, minilm, backend="onnx", dtype="fp32", rows_per_shard=25,
                     on_shard=stop_after_three)
    result = embed_corpus(corpus_file[0], out, minilm, backend="onnx", dtype="fp32", rows_per_shard=25,
                          engine=RayEngine(actors=1))
    assert (result.adopted_shards, result.embedded_rows) == (3, 125)
    ids, vectors, _ = vectors_of(out)
    assert ids == local_output[0] and np.array_equal(vectors, local_output[1])


def test_embed_adds_vectors_to_a_dataset_keeping_ids(minilm, corpus_file):
    from granite_rt import Embedder
    from granite_rt import ray as granite_ray

    _, ids, texts = corpus_file
    dataset = ray.data.from_items([{"doc": i, "text": t} for i, t in zip(ids, texts)])
    rows = granite_ray.embed(dataset, str(minilm), backend="onnx", dtype="fp32", batch_rows=64, actors=1).take_all()
    assert sorted(rows[0]) == ["doc", "embedding", "text", "truncated"]
    got = {row["doc"]: row["embedding"] for row in rows}
    assert sorted(got) == sorted(ids) and len(rows) == len(ids)
    expected = Embedder(minilm, backend="onnx", dtype="fp32").encode(texts)
    np.testing.assert_allclose(np.stack([got[i] for i in ids]), expected, atol=2e-6)


def test_rerank_scores_a_dataset_of_pairs(tiny_reranker_folders, loaded_tiny_reranker):
    from granite_rt import ray as granite_ray

    _, texts = cranfield_docs(40)
    queries = ["what is the flow over a flat plate?", "heat transfer at hypersonic speeds"]
    pairs = [(q, t) for q in queries for t in texts]
    dataset = ray.data.from_items([{"pair": n, "query": q, "document": d} for n, (q, d) in enumerate(pairs)])
    rows = granite_ray.rerank(dataset, str(tiny_reranker_folders["export"]), backend="onnx", dtype="fp32",
                              actors=1).take_all()
    scores = {row["pair"]: row["score"] for row in rows}
    assert sorted(scores) == list(range(len(pairs))) and len(rows) == len(pairs)
    np.testing.assert_allclose([scores[n] for n in range(len(pairs))], loaded_tiny_reranker.predict(pairs), atol=1e-6)


def test_serve_app_answers_embed_and_rerank_as_in_process(minilm, tiny_reranker_folders, loaded_tiny_reranker):
    httpx = pytest.importorskip("httpx")
    from ray import serve

    from granite_rt import Embedder
    from granite_rt.ray import serve_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    _, texts = cranfield_docs(12)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(serve_app(embedder=str(minilm), reranker=str(tiny_reranker_folders["export"]), backend="onnx",
                            dtype="fp32", num_replicas=1), name="granite-rt", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        embedded = httpx.post(f"{url}/embed", json={"inputs": texts, "truncate": True}, timeout=120)
        assert embedded.status_code == 200, embedded.text
        expected = Embedder(minilm, backend="onnx", dtype="fp32").encode(texts)
        np.testing.assert_allclose(np.array(embedded.json(), dtype=np.float32), expected, atol=2e-6)
        query = "what is the flow over a flat plate?"
        ranked = httpx.post(f"{url}/rerank", json={"query": query, "texts": texts, "truncate": True}, timeout=120)
        assert ranked.status_code == 200, ranked.text
        scores = loaded_tiny_reranker.predict([(query, t) for t in texts])
        assert [r["index"] for r in ranked.json()] == sorted(range(len(texts)), key=lambda i: -scores[i])
        np.testing.assert_allclose([r["score"] for r in ranked.json()], sorted(scores, reverse=True), atol=1e-6)
        bad = httpx.post(f"{url}/embed", json={"inputs": 3}, timeout=60)
        assert bad.status_code == 422 and "inputs" in bad.text       # the server's own validation answers
    finally:
        serve.shutdown()
