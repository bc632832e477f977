"""The HTTP server, end to end: uvicorn on a loopback port, the tiny exported models, httpx.

Every answer is compared with what the Python API returns for the same inputs in this process;
the limits (413, 422, 429, 503, 401) and a graceful shutdown are provoked for real. Requests
that must be held in flight use a gate around the real model (``Gated``), not timing luck.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from granite_rt.server.app import ServerConfig  # noqa: E402
from granite_rt.server.batcher import BatcherConfig  # noqa: E402
from granite_rt.server.models import EmbeddingService, RerankService  # noqa: E402
from granite_rt.server.schemas import Limits  # noqa: E402
from live_server import QUERY, TEXTS, Gated, LiveServer, close, in_background  # noqa: E402

@pytest.fixture(scope="module")
def embedder(loaded_tiny_embedder):
    return loaded_tiny_embedder


@pytest.fixture(scope="module")
def reranker(loaded_tiny_reranker):
    return loaded_tiny_reranker


@pytest.fixture(scope="module")
def tokenizer(tiny_embedder_folders):
    """The model's own tokenizer.json, untruncated: an independent token count."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_embedder_folders["export"] / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module")
def server(embedder, reranker):
    config = ServerConfig(batcher=BatcherConfig(max_wait_s=0.02), auto_truncate=True)
    with LiveServer(config, EmbeddingService(embedder, "tiny-embedder"),
                    RerankService(reranker, "tiny-reranker")) as live:
        yield live


# -------------------------------------------------------------------------------- endpoints

def test_embed_equals_the_python_api(server, embedder):
    texts = TEXTS[::5]
    with server.client() as c:
        batch = c.post("/embed", json={"inputs": texts})
        single = c.post("/embed", json={"inputs": texts[0]})
        raw = c.post("/embed", json={"inputs": texts, "normalize": False})
        short = c.post("/embed", json={"inputs": texts, "dimensions": 16})
    assert batch.status_code == single.status_code == raw.status_code == short.status_code == 200
    assert np.asarray(batch.json()).shape == (len(texts), embedder.dim)
    assert close(batch.json(), embedder.encode(texts))
    assert np.asarray(single.json()).shape == (1, embedder.dim)       # TEI: always a list of vectors
    assert close(single.json(), embedder.encode([texts[0]]))
    assert close(raw.json(), embedder.encode(texts, normalize=False))
    assert not np.allclose(np.linalg.norm(raw.json(), axis=1), 1.0)
    assert close(short.json(), embedder.encode(texts, truncate_dim=16))


def test_openai_embeddings_shape_encodings_and_usage(server, embedder, tokenizer):
    texts = TEXTS[1:8]
    with server.client() as c:
        floats = c.post("/v1/embeddings", json={"input": texts, "model": "my-name"}).json()
        b64 = c.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64", "dimensions": 32}).json()
        one = c.post("/v1/embeddings", json={"input": texts[0]}).json()
    expected = embedder.encode(texts)
    assert floats["object"] == "list" and floats["model"] == "my-name"
    assert [d["object"] for d in floats["data"]] == ["embedding"] * len(texts)
    assert [d["index"] for d in floats["data"]] == list(range(len(texts)))
    assert close([d["embedding"] for d in floats["data"]], expected)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]]
    assert close(decoded, embedder.encode(texts, truncate_dim=32))
    assert b64["model"] == "tiny-embedder"                          # the served name when none is sent
    tokens = sum(min(len(tokenizer.encode(t).ids), embedder.max_length) for t in texts)
    assert floats["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert len(one["data"]) == 1 and close([one["data"][0]["embedding"]], expected[:1])


def test_rerank_equals_the_python_api(server, reranker):
    docs = TEXTS[::4]
    with server.client() as c:
        ranked = c.post("/rerank", json={"query": QUERY, "texts": docs}).json()
        raw = c.post("/rerank", json={"query": QUERY, "texts": docs, "raw_scores": True}).json()
        top = c.post("/rerank", json={"query": QUERY, "texts": docs, "top_n": 3, "return_text": True}).json()
    expected = reranker.rank(QUERY, docs)
    assert [r["index"] for r in ranked] == [e["corpus_id"] for e in expected]
    assert close([r["score"] for r in ranked], [e["score"] for e in expected])
    assert all(set(r) == {"index", "score"} for r in ranked)
    logits = reranker.predict([(QUERY, d) for d in docs], activation="identity")
    assert close([r["score"] for r in sorted(raw, key=lambda r: r["index"])], logits)
    assert [(r["index"], r["text"]) for r in top] == [(e["corpus_id"], docs[e["corpus_id"]]) for e in expected[:3]]


def test_tokenize_returns_the_model_tokens(server, tokenizer):
    texts = [TEXTS[0], TEXTS[30]]
    with server.client() as c:
        answer = c.post("/tokenize", json={"inputs": texts}).json()
        plain = c.post("/tokenize", json={"inputs": texts[0], "add_special_tokens": False}).json()
    for text, tokens in zip(texts, answer):
        enc = tokenizer.encode(text)
        assert [t["id"] for t in tokens] == enc.ids
        assert [t["special"] for t in tokens] == [bool(s) for s in enc.special_tokens_mask]
        assert tokens[0]["start"] is None and tokens[1]["start"] == enc.offsets[1][0]
    assert [t["id"] for t in plain[0]] == tokenizer.encode(texts[0], add_special_tokens=False).ids


def test_info_health_and_metrics(server, embedder):
    with server.client() as c:
        info = c.get("/info").json()
        health = c.get("/health")
        c.post("/embed", json={"inputs": ["metrics probe"]})
        metrics = c.get("/metrics")
    assert info["model_id"] == "tiny-embedder" and info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["max_input_length"] == embedder.max_length
    assert info["max_client_batch_size"] == 256 and info["auto_truncate"] is True
    assert set(info["models"]) == {"embedder", "reranker"}
    assert health.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    for family in ("granite_rt_requests_total", "granite_rt_request_duration_seconds", "granite_rt_tokens_total",
                   "granite_rt_batch_size", "granite_rt_queue_depth", "granite_rt_requests_in_flight"):
        assert f"# TYPE {family} " in text
    assert 'granite_rt_requests_total{endpoint="/embed",status="200"}' in text
    assert 'granite_rt_tokens_total{model="embedder"}' in text


def test_64_concurrent_clients_with_mixed_sizes_all_answered_correctly(server, embedder, reranker):
    rng = random.Random(5)
    jobs = []
    for i in range(64):
        texts = rng.sample(TEXTS, rng.randint(1, 12))
        jobs.append((("/embed", "/v1/embeddings", "/rerank")[i % 3], texts))

    async def call(client, path, texts):
        body = {"/embed": {"inputs": texts}, "/v1/embeddings": {"input": texts},
                "/rerank": {"query": QUERY, "texts": texts}}[path]
        return await client.post(path, json=body)

    async def all_at_once():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(call(client, path, texts) for path, texts in jobs))

    with server.client() as c:
        before = _batch_counts(c.get("/metrics").text)
    answers = asyncio.run(all_at_once())
    vector = dict(zip(TEXTS, embedder.encode(TEXTS)))     # a text's vector does not depend on its batch
    score = dict(zip(TEXTS, reranker.predict([(QUERY, t) for t in TEXTS])))
    for (path, texts), answer in zip(jobs, answers):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if path == "/embed":
            assert close(body, [vector[t] for t in texts])
        elif path == "/v1/embeddings":
            assert close([d["embedding"] for d in body["data"]], [vector[t] for t in texts])
        else:
            assert sorted(r["index"] for r in body) == list(range(len(texts)))
            assert close([r["score"] for r in body], [score[texts[r["index"]]] for r in body])
    with server.client() as c:
        after = _batch_counts(c.get("/metrics").text)
    calls = after - before
    assert 0 < calls < 64, f"{calls} model calls for 64 concurrent requests: nothing was coalesced"


def _batch_counts(metrics: str) -> int:
    return sum(int(float(line.split()[-1])) for line in metrics.splitlines()
               if line.startswith("granite_rt_batch_size_count"))


# ----------------------------------------------------------------------------------- limits

@pytest.fixture(scope="module")
def strict(embedder, reranker):
    """A server with small limits, an API key and no auto-truncation."""
    config = ServerConfig(api_key="s3cret", limits=Limits(max_request_bytes=4_000, max_inputs=4))
    with LiveServer(config, EmbeddingService(embedder, "tiny-embedder"),
                    RerankService(reranker, "tiny-reranker")) as live:
        yield live


AUTH = {"Authorization": "Bearer s3cret"}


def test_api_key_is_required_except_for_health(strict):
    with strict.client() as c:
        missing = c.post("/embed", json={"inputs": "x"})
        wrong = c.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cre"})
        openai = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Basic s3cret"})
        right = c.post("/embed", json={"inputs": "x"}, headers=AUTH)
        metrics = c.get("/metrics")
        health = c.get("/health")
    assert missing.status_code == wrong.status_code == openai.status_code == metrics.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error_type"] == "Unauthorized"
    assert openai.json()["error"]["code"] == 401                  # OpenAI's error shape on its route
    assert right.status_code == 200 and health.status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"inputs": ["a"] * 5}, "inputs"),                              # more inputs than --max-client-batch-size
    ({"inputs": "x" * 5_000}, "body"),                              # more bytes than --max-request-bytes
    ({"inputs": ["word " * 200]}, "inputs[0]"),                     # longer than the model, truncate unset
    ({"inputs": ["ok", "word " * 200], "truncate": False}, "inputs[1]"),
])
def test_too_large_is_413_naming_the_field(strict, body, field):
    with strict.client(headers=AUTH) as c:
        answer = c.post("/embed", json=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["field"] == field


def test_over_long_input_is_embedded_when_truncation_is_asked(strict, embedder):
    long_text = "word " * 200
    with strict.client(headers=AUTH) as c:
        answer = c.post("/embed", json={"inputs": [long_text], "truncate": True})
        pair = c.post("/rerank", json={"query": QUERY, "texts": [long_text]})
    assert answer.status_code == 200 and close(answer.json(), embedder.encode([long_text]))
    assert pair.status_code == 413 and pair.json()["field"] == "texts[0]"


@pytest.mark.parametrize("path, body, field", [
    ("/embed", {}, "inputs"),
    ("/embed", {"inputs": []}, "inputs"),
    ("/embed", {"inputs": ["a", 3]}, "inputs[1]"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, "normalize"),
    ("/embed", {"inputs": "a", "dimensions": 0}, "dimensions"),
    ("/embed", {"inputs": "a", "dimensions": 10_000}, "dimensions"),
    ("/embed", {"inputs": "a", "truncation_direction": "left"}, "truncation_direction"),
    ("/embed", {"inputs": "a", "prompt_name": "query"}, "prompt_name"),
    ("/embed", [1, 2], "body"),
    ("/rerank", {"texts": ["a"]}, "query"),
    ("/rerank", {"query": "q", "texts": "a"}, "texts"),
    ("/rerank", {"query": "q", "texts": ["a"], "top_n": -1}, "top_n"),
    ("/tokenize", {"inputs": None}, "inputs"),
])
def test_invalid_requests_are_422_naming_the_field(strict, path, body, field):
    with strict.client(headers=AUTH) as c:
        answer = c.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and answer.json()["error_type"] == "Validation"


def test_openai_errors_use_openai_shape(strict):
    with strict.client(headers=AUTH) as c:
        bad_format = c.post("/v1/embeddings", json={"input": "a", "encoding_format": "hex"})
        tokens = c.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
        not_json = c.post("/v1/embeddings", content=b"{input:", headers={"content-type": "application/json"})
    assert bad_format.status_code == tokens.status_code == not_json.status_code == 422
    assert bad_format.json()["error"]["param"] == "encoding_format"
    assert tokens.json()["error"]["param"] == "input[0]" and "token-id" in tokens.json()["error"]["message"]
    assert not_json.json()["error"]["param"] == "body"


def test_full_queue_answers_429_with_retry_after(embedder):
    gated = Gated(EmbeddingService(embedder, "tiny-embedder"))
    config = ServerConfig(batcher=BatcherConfig(max_pending=1))
    with LiveServer(config, gated) as live, live.client() as c:
        holder = in_background(lambda: c.post("/embed", json={"inputs": ["held"]}))
        assert gated.entered.wait(30)
        refused = c.post("/embed", json={"inputs": ["refused"]})
        gated.release.set()
        held = holder()
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error_type"] == "Overloaded"
    assert held.status_code == 200 and close(held.json(), embedder.encode(["held"]))


def test_request_timeout_answers_503(embedder):
    gated = Gated(EmbeddingService(embedder, "tiny-embedder"))
    config = ServerConfig(batcher=BatcherConfig(request_timeout_s=0.3))
    with LiveServer(config, gated) as live, live.client() as c:
        answer = c.post("/embed", json={"inputs": ["slow"]})
        gated.release.set()
        after = c.post("/embed", json={"inputs": ["fast"]})
    assert answer.status_code == 503 and "0.3 s" in answer.json()["error"]
    assert after.status_code == 200


def test_rerank_without_a_reranker_is_424(embedder):
    with LiveServer(ServerConfig(), EmbeddingService(embedder, "e")) as live, live.client() as c:
        answer = c.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert answer.status_code == 424 and "--reranker" in answer.json()["error"]


def test_health_and_requests_answer_503_once_the_model_worker_stopped(embedder):
    with LiveServer(ServerConfig(), EmbeddingService(embedder, "e")) as live, live.client() as c:
        assert c.get("/health").status_code == 200
        live.app.state.granite.batchers["embedder"].stop(10)
        health = c.get("/health")
        refused = c.post("/embed", json={"inputs": ["x"]})
    assert health.status_code == 503
    assert refused.status_code == 503 and refused.json()["error_type"] == "Unhealthy"


def test_graceful_shutdown_finishes_the_request_in_flight(embedder):
    gated = Gated(EmbeddingService(embedder, "tiny-embedder"))
    live = LiveServer(ServerConfig(), gated).__enter__()
    with live.client() as c:
        holder = in_background(lambda: c.post("/embed", json={"inputs": ["in flight"]}))
        assert gated.entered.wait(30)
        live.server.should_exit = True          # what uvicorn's SIGTERM/SIGINT handler does
        time.sleep(0.3)
        assert live.thread.is_alive(), "the server quit with a request in flight"
        gated.release.set()
        answer = holder()
    live.thread.join(30)
    assert not live.thread.is_alive()
    assert answer.status_code == 200 and close(answer.json(), embedder.encode(["in flight"]))
    with pytest.raises(httpx.ConnectError):
        httpx.get(live.url + "/health", timeout=5)
