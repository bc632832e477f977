"""granite_rt.server.app under real uvicorn on loopback: overload, clients that leave, bad bodies, TEI routes.

Each scenario is provoked for real (raw sockets that close mid-request, bursts of simultaneous
connections, hostile bodies) with model calls held by a gate where timing matters, and checked
through the HTTP answers and /metrics, never by timing alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from granite_rt.server.app import ServerConfig  # noqa: E402
from granite_rt.server.batcher import BatcherConfig  # noqa: E402
from granite_rt.server.models import EmbeddingService, RerankService  # noqa: E402
from live_server import QUERY, TEXTS, Gated, LiveServer, close, in_background  # noqa: E402


@pytest.fixture(scope="module")
def both(loaded_tiny_embedder, loaded_tiny_reranker):
    with LiveServer(ServerConfig(), EmbeddingService(loaded_tiny_embedder, "tiny-embedder"),
                    RerankService(loaded_tiny_reranker, "tiny-reranker")) as live:
        yield live


def metric(live: LiveServer, line_start: str) -> float:
    """The value of the first /metrics sample line starting with ``line_start`` (0 when absent)."""
    text = httpx.get(live.url + "/metrics", timeout=30).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return values[0] if values else 0.0


def wait_for(condition, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def raw_post(live: LiveServer, path: str, body: bytes, declared: int | None = None) -> socket.socket:
    """A POST sent over a bare socket (``declared`` > len(body): the body is left unfinished)."""
    host, port = live.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared if declared is not None else len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body)
    return sock


# ------------------------------------------------------------------------------ bad bodies

SURROGATE = b'{"inputs": ["fine", "\\ud800 lone"]}'
BAD_BODIES = [
    ("/embed", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 422, "body"),
    ("/embed", b'{"inputs": "a", "dimensions": ' + b"7" * 5000 + b"}", "application/json", 422, "body"),
    ("/embed", b'{"inputs": "a", "dimensions": ' + b"7" * 4000 + b"}", "application/json", 422, "dimensions"),
    ("/embed", SURROGATE, "application/json", 422, "inputs[1]"),
    ("/embed", b'{"inputs": "\\udfff"}', "application/json", 422, "inputs"),
    ("/rerank", b'{"query": "\\ud800", "texts": ["a"]}', "application/json", 422, "query"),
    ("/rerank", b'{"query": "q", "texts": ["a", "\\ud800"]}', "application/json", 422, "texts[1]"),
    ("/tokenize", SURROGATE, "application/json", 422, "inputs[1]"),
    ("/embed", b"\xff\xfe not utf-8", "application/json", 422, "body"),
    ("/embed", b'{"inputs": "a"}', "text/plain", 415, "content-type"),
    ("/embed", b"inputs=a", "application/x-www-form-urlencoded", 415, "content-type"),
    ("/predict", b'{"inputs": "a lone text"}', "application/json", 422, "inputs"),
    ("/predict", b'{"inputs": [["q", "t"], ["only one"]]}', "application/json", 422, "inputs[1]"),
    ("/decode", b'{"ids": [1, -4]}', "application/json", 422, "ids[1]"),
    ("/decode", b'{"ids": [[1, 2], [3, 99999999999999999999]]}', "application/json", 422, "ids[1][1]"),
]


@pytest.mark.parametrize("path, body, content_type, status, field", BAD_BODIES,
                         ids=[f"{p}-{f}-{i}" for i, (p, _, _, _, f) in enumerate(BAD_BODIES)])
def test_every_bad_body_is_a_4xx_json_naming_the_field_and_the_server_keeps_serving(
        both, loaded_tiny_embedder, caplog, path, body, content_type, status, field):
    with caplog.at_level(logging.ERROR, logger="granite_rt.server"), both.client() as c:
        answer = c.post(path, content=body, headers={"content-type": content_type})
        after = c.post("/embed", json={"inputs": ["still serving"]})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["field"] == field, answer.json()
    assert len(answer.json()["error"]) < 300                           # no 5000-digit echo, no traceback
    assert after.status_code == 200 and close(after.json(), loaded_tiny_embedder.encode(["still serving"]))
    assert not caplog.records


def test_openai_route_names_the_input_and_gives_advice_that_works_there(loaded_tiny_embedder):
    with LiveServer(ServerConfig(), EmbeddingService(loaded_tiny_embedder, "e")) as live, live.client() as c:
        surrogate = c.post("/v1/embeddings", content=b'{"input": ["a", "\\ud800"]}',
                           headers={"content-type": "application/json"})
        too_long = c.post("/v1/embeddings", json={"input": ["word " * 200]})
        prompt = c.post("/v1/embeddings", json={"input": "a", "prompt_name": "query"})
        left = c.post("/v1/embeddings", json={"input": "a", "truncation_direction": "left"})
    assert surrogate.status_code == 422 and surrogate.json()["error"]["param"] == "input[1]"
    assert too_long.status_code == 413 and too_long.json()["error"]["param"] == "input[0]"
    message = too_long.json()["error"]["message"]
    assert "--auto-truncate" in message and '"truncate"' not in message
    assert prompt.status_code == 422 and prompt.json()["error"]["param"] == "prompt_name"
    assert left.status_code == 422 and left.json()["error"]["param"] == "truncation_direction"


def test_unknown_routes_and_methods_answer_json(both):
    with both.client() as c:
        missing = c.post("/embed_everything", json={})
        method = c.get("/embed")
    assert missing.status_code == 404 and "/embed_everything" in missing.json()["error"]
    assert method.status_code == 405 and "GET" in method.json()["error"]


# -------------------------------------------------------------------------------- overload

def test_three_times_the_limit_at_once_gets_the_limit_served_and_the_rest_json_429(loaded_tiny_embedder):
    limit = 4
    gated = Gated(EmbeddingService(loaded_tiny_embedder, "e"))
    config = ServerConfig(batcher=BatcherConfig(max_pending=limit, max_wait_s=0.0))
    texts = [f"burst request {i}" for i in range(3 * limit)]

    async def burst(url):
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=3 * limit)) as client:
            tasks = [asyncio.create_task(client.post("/embed", json={"inputs": [t]})) for t in texts]
            while sum(t.done() for t in tasks) < 2 * limit:     # the refusals come back at once ...
                await asyncio.sleep(0.01)
            assert not any(t.done() and t.result().status_code == 200 for t in tasks)
            gated.release.set()                                 # ... the admitted ones once the model runs
            return await asyncio.gather(*tasks)

    with LiveServer(config, gated) as live:
        answers = asyncio.run(burst(live.url))
        refused_in_metrics = metric(live, 'granite_rt_requests_total{endpoint="/embed",status="429"}')
    served = [(t, a) for t, a in zip(texts, answers) if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(served) == limit and len(refused) == 2 * limit, [a.status_code for a in answers]
    for text, answer in served:
        assert close(answer.json(), loaded_tiny_embedder.encode([text]))
    for answer in refused:
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error_type"] == "Overloaded" and int(answer.headers["retry-after"]) >= 1
    assert refused_in_metrics == 2 * limit


# ---------------------------------------------------------------------------- clients that leave

def test_a_client_that_leaves_costs_no_model_work_and_is_not_an_error(loaded_tiny_embedder, caplog):
    gated = Gated(EmbeddingService(loaded_tiny_embedder, "e"))
    config = ServerConfig(batcher=BatcherConfig(max_wait_s=0.0))
    inputs = 'granite_rt_inputs_total{model="embedder"}'
    with caplog.at_level(logging.ERROR), LiveServer(config, gated) as live, live.client() as c:
        holder = in_background(lambda: c.post("/embed", json={"inputs": ["holds the model"]}))
        assert gated.entered.wait(30)
        # queued behind the held call, then gone: its 50 texts must never reach the model
        queued = raw_post(live, "/embed", json.dumps({"inputs": [f"left {i}" for i in range(50)]}).encode())
        wait_for(lambda: metric(live, 'granite_rt_queue_depth{model="embedder"}') == 1, "the request to queue")
        queued.close()
        wait_for(lambda: metric(live, 'granite_rt_requests_dropped_total{model="embedder"}') == 1, "the drop")
        # a body cut off halfway
        partial = raw_post(live, "/embed", b'{"inputs": ["never fin', declared=1000)
        time.sleep(0.2)
        partial.close()
        wait_for(lambda: metric(live, 'granite_rt_requests_total{endpoint="/embed",status="499"}') == 2,
                 "both departures in /metrics")
        gated.release.set()
        held = holder()
        after = c.post("/embed", json={"inputs": ["after"]})
        rows = metric(live, inputs)
        errors = metric(live, 'granite_rt_requests_total{endpoint="/embed",status="500"}')
    assert held.status_code == 200 and after.status_code == 200
    assert rows == 2                                   # "holds the model" + "after": nothing for the 50
    assert errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


# -------------------------------------------------------------------------------- TEI routes

def test_tei_root_routes_follow_the_body_when_both_models_are_served(both, loaded_tiny_embedder,
                                                                       loaded_tiny_reranker):
    docs = TEXTS[::6]
    with both.client() as c:
        embedded = c.post("/", json={"inputs": docs, "truncate": True})
        sagemaker = c.post("/invocations", json={"inputs": docs[0]})
        ranked = c.post("/", json={"query": QUERY, "texts": docs, "truncate": True})
        health = [c.get(path).status_code for path in ("/", "/ping", "/health")]
    assert close(embedded.json(), loaded_tiny_embedder.encode(docs))
    assert close(sagemaker.json(), loaded_tiny_embedder.encode([docs[0]]))
    expected = loaded_tiny_reranker.rank(QUERY, docs)
    assert [r["index"] for r in ranked.json()] == [e["corpus_id"] for e in expected]
    assert close([r["score"] for r in ranked.json()], [e["score"] for e in expected])
    assert health == [200, 200, 200]


def test_tei_root_is_the_served_models_route(loaded_tiny_embedder, loaded_tiny_reranker):
    docs = TEXTS[:5]
    with LiveServer(ServerConfig(), reranker=RerankService(loaded_tiny_reranker, "r")) as live, live.client() as c:
        ranked = c.post("/invocations", json={"query": QUERY, "texts": docs}).json()
        embed = c.post("/", json={"inputs": docs})
    assert [r["index"] for r in ranked] == [e["corpus_id"] for e in loaded_tiny_reranker.rank(QUERY, docs)]
    assert embed.status_code == 422 and embed.json()["field"] == "query"     # TEI: / is /rerank on a reranker
    with LiveServer(ServerConfig(), EmbeddingService(loaded_tiny_embedder, "e")) as live, live.client() as c:
        assert close(c.post("/", json={"inputs": docs}).json(), loaded_tiny_embedder.encode(docs))


def test_predict_scores_pairs_as_the_reranker_does(both, loaded_tiny_reranker):
    pairs = [(QUERY, t) for t in TEXTS[:6]]
    with both.client() as c:
        batch = c.post("/predict", json={"inputs": [list(p) for p in pairs]})
        raw = c.post("/predict", json={"inputs": [list(p) for p in pairs], "raw_scores": True})
        single = c.post("/predict", json={"inputs": list(pairs[0])})
    assert batch.status_code == raw.status_code == single.status_code == 200
    assert [len(p) for p in batch.json()] == [1] * len(pairs)
    assert {p[0]["label"] for p in batch.json()} == {"LABEL_0"}
    assert close([p[0]["score"] for p in batch.json()], loaded_tiny_reranker.predict(pairs))
    assert close([p[0]["score"] for p in raw.json()], loaded_tiny_reranker.predict(pairs, activation="identity"))
    assert close([single.json()[0]["score"]], [loaded_tiny_reranker.predict(pairs[0])])


def test_decode_inverts_tokenize(both):
    texts = ["hello world", TEXTS[3]]
    with both.client() as c:
        tokens = c.post("/tokenize", json={"inputs": texts, "add_special_tokens": False}).json()
        ids = [[t["id"] for t in row] for row in tokens]
        decoded = c.post("/decode", json={"ids": ids}).json()
        one = c.post("/decode", json={"ids": ids[0]}).json()
        specials = c.post("/tokenize", json={"inputs": "hello world"}).json()
        kept = c.post("/decode", json={"ids": [t["id"] for t in specials[0]], "skip_special_tokens": False}).json()
        skipped = c.post("/decode", json={"ids": [t["id"] for t in specials[0]]}).json()
    assert [" ".join(d.split()) for d in decoded] == [" ".join(t.split()) for t in texts]
    assert one == decoded[:1]
    special_texts = [t["text"] for t in specials[0] if t["special"]]
    assert special_texts and all(s in kept[0] for s in special_texts)
    assert not any(s in skipped[0] for s in special_texts)


def test_huggingface_hub_inference_client_on_the_server_root(both, loaded_tiny_embedder, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    # huggingface_hub refuses every URL in offline mode (read once at import), even loopback
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    client = hub.InferenceClient(model=both.url)
    one = client.feature_extraction("hello from InferenceClient")
    raw = client.feature_extraction("hello from InferenceClient", normalize=False)
    assert close(one, loaded_tiny_embedder.encode(["hello from InferenceClient"]))
    assert close(raw, loaded_tiny_embedder.encode(["hello from InferenceClient"], normalize=False))


def test_a_server_with_shape_buckets_answers_as_the_unbucketed_runtime(tiny_embedder_folders, loaded_tiny_embedder):
    from granite_rt.server.models import load_services

    embedding, _ = load_services(str(tiny_embedder_folders["export"]), None, backend="onnx", dtype="fp32")
    buckets = embedding.model.shape_buckets
    assert buckets is not None and buckets.widths[-1] == loaded_tiny_embedder.max_length
    texts = TEXTS[::2]
    with LiveServer(ServerConfig(), embedding) as live, live.client() as c:
        answers = [c.post("/embed", json={"inputs": texts[i:i + n], "truncate": True})
                   for i, n in ((0, 1), (1, 3), (4, 7), (11, 20))]
    for (i, n), answer in zip(((0, 1), (1, 3), (4, 7), (11, 20)), answers):
        assert close(answer.json(), loaded_tiny_embedder.encode(texts[i:i + n]))
    assert "unbucketed" not in embedding.summary() and "backend=onnx" in embedding.summary()
