"""The HTTP API: Hugging Face TEI routes, OpenAI's /v1/embeddings and Prometheus /metrics.

Handlers take a place in the model's queue (``DynamicBatcher.admit``: 429 when full, before the
body is read), parse and validate the body (``schemas``), count tokens, hand the inputs to the
batcher while watching for the client to disconnect (its request is then withdrawn), and shape
the answer as TEI or OpenAI clients expect it. Errors become JSON bodies naming the field: TEI's
``{"error", "error_type"}`` (plus ``field``) on TEI routes, OpenAI's ``{"error": {"message",
"type", "param", "code"}}`` on /v1/embeddings; status codes as TEI's (413 over a limit, 422
invalid, 424 the model failed, 429 overloaded, 503 unhealthy).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import importlib.metadata
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .batcher import BatcherConfig, BatcherStoppedError, DynamicBatcher, QueueFullError, RequestTimeoutError
from .metrics import CONTENT_TYPE, Metrics
from .models import EmbeddingService, RerankService
from .schemas import (EmbedRequest, InvalidRequestError, Limits, PayloadTooLargeError, RequestError,
                      check_content_type, parse_decode, parse_embed, parse_json, parse_openai, parse_predict,
                      parse_rerank, parse_tokenize, short_value)

log = logging.getLogger("granite_rt.server")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``granite-rt serve`` can set besides the models."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None          # Bearer token; None: no authentication
    auto_truncate: bool = False         # TEI's default: inputs longer than the model takes get 413
    model_id: str | None = None         # name reported by /info and /v1/embeddings
    limits: Limits = field(default_factory=Limits)
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    log_level: str = "info"


class ModelNotServedError(RequestError):
    """The route needs a model this server was not started with (TEI answers 424)."""

    status = 424
    error_type = "Backend"


class ModelFailedError(RequestError):
    """The model call failed for this request (TEI's backend error, 424)."""

    status = 424
    error_type = "Backend"


class TokenizerError(RequestError):
    """The tokenizer refused the input (TEI's tokenizer error, 422)."""

    error_type = "Tokenizer"


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready; nothing can be sent."""


# nginx's "client closed request": recorded in /metrics for requests whose client left (no answer is sent).
CLIENT_CLOSED = 499


class _State:
    """What the handlers share: config, services, batchers and metrics."""

    def __init__(self, config: ServerConfig, embedder: EmbeddingService | None,
                 reranker: RerankService | None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.embedder = embedder
        self.reranker = reranker
        self.batchers = {
            svc.kind: DynamicBatcher(svc.kind, svc.run, config.batcher, self.metrics)
            for svc in (embedder, reranker) if svc is not None
        }
        self.api_key = config.api_key.encode() if config.api_key else None

    def need_embedder(self) -> EmbeddingService:
        if self.embedder is None:
            raise ModelNotServedError(None, "this server has no embedder; start it with --embedder MODEL")
        return self.embedder

    def need_reranker(self) -> RerankService:
        if self.reranker is None:
            raise ModelNotServedError(None, "model is not a re-ranker model; start the server with --reranker MODEL")
        return self.reranker


def create_app(config: ServerConfig, embedder: EmbeddingService | None = None,
               reranker: RerankService | None = None) -> Starlette:
    """The ASGI app; batchers start with the app's lifespan and finish queued work on shutdown."""
    if embedder is None and reranker is None:
        raise ValueError("the server needs an embedder, a reranker or both")
    state = _State(config, embedder, reranker)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for batcher in state.batchers.values():
            batcher.start()
        yield
        for batcher in state.batchers.values():
            await run_in_threadpool(batcher.stop, 30)

    def route(path: str, handler: Callable[[_State, Request], Awaitable[Response]], method: str,
              openai: bool = False, public: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _handle(state, request, handler, path, openai, public)
        return Route(path, endpoint, methods=[method])

    routes = [
        route("/embed", _embed, "POST"),
        route("/rerank", _rerank, "POST"),
        route("/predict", _predict, "POST"),
        route("/tokenize", _tokenize, "POST"),
        route("/decode", _decode, "POST"),
        route("/v1/embeddings", _openai_embeddings, "POST", openai=True),
        route("/embeddings", _openai_embeddings, "POST", openai=True),
        # TEI's default route (and SageMaker's): /embed or /rerank, by the model served (see _root).
        route("/", _root, "POST"),
        route("/invocations", _root, "POST"),
        route("/info", _info, "GET"),
        route("/metrics", _metrics, "GET"),
        route("/health", _health, "GET", public=True),
        route("/", _health, "GET", public=True),           # TEI: the Inference API's health route
        route("/ping", _health, "GET", public=True),       # TEI: SageMaker's health route
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.granite = state
    return app


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own answers (unknown route 404, wrong method 405) as JSON too."""
    message = {404: f"no route {request.url.path}; see /info and docs/server.md",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message, "error_type": "Validation"}, status_code=exc.status_code,
                        headers=exc.headers)


async def _handle(state: _State, request: Request, handler, path: str, openai: bool, public: bool) -> Response:
    """Authenticate, run the handler, map errors to JSON answers, record metrics."""
    start = time.perf_counter()
    in_flight = "granite_rt_requests_in_flight"
    state.metrics.inc(in_flight)
    try:
        if not public and state.api_key is not None and not _authorized(request, state.api_key):
            response = _error(401, "Unauthorized", None, "missing or wrong API key: send "
                              "'Authorization: Bearer <key>'", openai, {"WWW-Authenticate": "Bearer"})
        else:
            response = await handler(state, request)
    except RequestError as err:
        response = _error(err.status, err.error_type, err.field, err.message, openai)
    except QueueFullError as err:
        response = _error(429, "Overloaded", None, str(err), openai, {"Retry-After": str(err.retry_after_s)})
    except RequestTimeoutError as err:
        response = _error(503, "Overloaded", None, str(err), openai, {"Retry-After": "1"})
    except BatcherStoppedError as err:
        response = _error(503, "Unhealthy", None, str(err), openai)
    except (ClientDisconnect, ClientGoneError):  # the client left: not an error, and nobody to answer
        response = Response(status_code=CLIENT_CLOSED)
    except Exception as err:  # noqa: BLE001 - answer 500, keep serving, log the traceback
        log.exception("unexpected error on %s", path)
        response = _error(500, "Backend", None, f"internal error: {type(err).__name__}: {err}", openai)
    finally:
        state.metrics.inc(in_flight, amount=-1)
    state.metrics.observe_request(path, response.status_code, time.perf_counter() - start)
    return response


def _authorized(request: Request, key: bytes) -> bool:
    """Constant-time comparison of the Bearer token with the configured key."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key)


def _error(status: int, error_type: str, field_name: str | None, message: str, openai: bool,
           headers: dict[str, str] | None = None) -> JSONResponse:
    if openai:
        kind = "invalid_request_error" if status in (413, 415, 422) else error_type.lower() + "_error"
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": field_name, "code": status}}
    else:
        body = {"error": message, "error_type": error_type}
        if field_name is not None:
            body["field"] = field_name
    return JSONResponse(body, status_code=status, headers=headers)


async def _body(state: _State, request: Request) -> dict[str, Any]:
    """The JSON body, refused with 413 as soon as it exceeds the byte limit (415 if declared as not JSON)."""
    check_content_type(request.headers.get("content-type"))
    limit = state.config.limits.max_request_bytes
    declared = request.headers.get("content-length")
    too_large = f"the request body exceeds {limit} bytes (--max-request-bytes)"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError("body", too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError("body", too_large)
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


async def _token_counts(count: Callable[[Any], list[int]], items: Any) -> list[int]:
    """Tokens per input, counted off the event loop; a tokenizer refusal is the client's 422."""
    try:
        return await run_in_threadpool(count, items)
    except (ValueError, TypeError) as err:
        raise TokenizerError(None, f"the tokenizer cannot take this input: {err}") from None


def _counted(state: _State, counts: list[int], truncate: bool | None, max_length: int, name: str,
             advice: str = 'send "truncate": true') -> list[int]:
    """Tokens the model will see per input; 413 for an input over the model's length unless truncating."""
    if not (state.config.auto_truncate if truncate is None else truncate):
        for i, n in enumerate(counts):
            if n > max_length:
                raise PayloadTooLargeError(
                    f"{name}[{i}]", f"{name}[{i}] has {n} tokens, more than the model's maximum of "
                                    f"{max_length}; shorten it or {advice}")
    return [min(n, max_length) for n in counts]


async def _submit(state: _State, request: Request, kind: str, key: Hashable, items: list,
                  counts: Sequence[int]) -> list:
    """The model's results for ``items``, unless the client disconnects first: its request is then
    withdrawn from the queue (or stopped between the calls of a large one) and ClientGoneError raised."""
    work = asyncio.ensure_future(state.batchers[kind].submit(key, items, counts))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        left = not work.done()
        if left:
            work.cancel()       # withdraws the request from the queue when the task next runs
    if left:
        raise ClientGoneError()
    error = work.exception()
    if error is None:
        return work.result()
    if isinstance(error, (QueueFullError, RequestTimeoutError, BatcherStoppedError)):
        raise error
    raise ModelFailedError(None, f"the model failed on this request: {type(error).__name__}: {error}") from error


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (the body is read by now, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _run_embed(state: _State, request: Request, req: EmbedRequest, name: str,
                     advice: str = 'send "truncate": true') -> tuple[list[np.ndarray], int]:
    svc = state.need_embedder()
    if req.dimensions is not None and req.dimensions > svc.dim:
        raise InvalidRequestError("dimensions", f"dimensions must be at most the model's {svc.dim}, "
                                                f"got {short_value(req.dimensions)}")
    counts = _counted(state, await _token_counts(svc.token_counts, req.texts), req.truncate, svc.max_length, name,
                      advice)
    rows = await _submit(state, request, svc.kind, (req.normalize, req.dimensions), req.texts, counts)
    return rows, sum(counts)


async def _embed(state: _State, request: Request) -> Response:
    with state.batchers[state.need_embedder().kind].admit():
        return await _embed_body(state, request, await _body(state, request))


async def _embed_body(state: _State, request: Request, body: dict[str, Any]) -> Response:
    rows, tokens = await _run_embed(state, request, parse_embed(body, state.config.limits), "inputs")
    return JSONResponse([row.tolist() for row in rows], headers={"x-compute-tokens": str(tokens)})


async def _openai_embeddings(state: _State, request: Request) -> Response:
    with state.batchers[state.need_embedder().kind].admit():
        req = parse_openai(await _body(state, request), state.config.limits)
        rows, tokens = await _run_embed(state, request, req, "input",
                                        advice="start the server with --auto-truncate")
    data = [{"object": "embedding", "index": i, "embedding": _encode_vector(row, req.encoding_format)}
            for i, row in enumerate(rows)]
    return JSONResponse({"object": "list", "data": data, "model": req.model or _model_id(state),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode_vector(row: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's encodings: a list of floats, or base64 of little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return row.tolist()


async def _rerank(state: _State, request: Request) -> Response:
    svc = state.need_reranker()
    with state.batchers[svc.kind].admit():
        return await _rerank_body(state, request, await _body(state, request))


async def _rerank_body(state: _State, request: Request, body: dict[str, Any]) -> Response:
    svc = state.need_reranker()
    req = parse_rerank(body, state.config.limits)
    pairs = [(req.query, text) for text in req.texts]
    counts = _counted(state, await _token_counts(svc.token_counts, pairs), req.truncate, svc.max_length, "texts")
    scores = await _submit(state, request, svc.kind, "identity" if req.raw_scores else "auto", pairs, counts)
    tokens = sum(counts)
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))   # stable: ties keep input order
    ranks = []
    for i in order[: req.top_n]:
        rank: dict[str, Any] = {"index": i, "score": float(scores[i])}
        if req.return_text:
            rank["text"] = req.texts[i]
        ranks.append(rank)
    return JSONResponse(ranks, headers={"x-compute-tokens": str(tokens)})


async def _predict(state: _State, request: Request) -> Response:
    """TEI's sequence-classification route on the reranker: per pair ``[{"score", "label"}]``."""
    svc = state.need_reranker()
    with state.batchers[svc.kind].admit():
        req = parse_predict(await _body(state, request), state.config.limits)
        counts = _counted(state, await _token_counts(svc.token_counts, req.pairs), req.truncate, svc.max_length,
                          "inputs")
        scores = await _submit(state, request, svc.kind, "identity" if req.raw_scores else "auto", req.pairs, counts)
    label = next(iter(svc.model_type()["reranker"]["id2label"].values()))
    predictions = [[{"score": float(score), "label": label}] for score in scores]
    return JSONResponse(predictions[0] if req.single else predictions, headers={"x-compute-tokens": str(sum(counts))})


async def _root(state: _State, request: Request) -> Response:
    """TEI's ``POST /`` and ``/invocations``: /embed when the server has an embedder only, /rerank when it
    has a reranker only; with both, a body with ``query`` and ``texts`` is reranked, any other embedded."""
    if state.embedder is None or state.reranker is None:
        return await (_embed if state.reranker is None else _rerank)(state, request)
    body = await _body(state, request)
    rerank = "query" in body and "texts" in body
    with state.batchers[(state.reranker if rerank else state.embedder).kind].admit():
        return await (_rerank_body if rerank else _embed_body)(state, request, body)


async def _tokenize(state: _State, request: Request) -> Response:
    req = parse_tokenize(await _body(state, request), state.config.limits)
    svc = state.embedder or state.need_reranker()
    tokens = await run_in_threadpool(svc.tokenize, req.texts, req.add_special_tokens)
    return JSONResponse(tokens)


async def _decode(state: _State, request: Request) -> Response:
    svc = state.embedder or state.need_reranker()
    req = parse_decode(await _body(state, request), state.config.limits, svc.vocab_size)
    return JSONResponse(await run_in_threadpool(svc.decode, req.ids, req.skip_special_tokens))


async def _info(state: _State, request: Request) -> Response:
    svc = state.embedder or state.reranker
    cfg = state.config
    info = {
        "model_id": _model_id(state),
        "model_sha": None,
        "model_dtype": svc.dtype,
        "model_type": svc.model_type(),
        "max_concurrent_requests": cfg.batcher.max_pending,
        "max_input_length": svc.max_length,
        "max_batch_tokens": cfg.batcher.max_batch_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": cfg.limits.max_inputs,
        "auto_truncate": cfg.auto_truncate,
        "tokenization_workers": 1,
        "version": _version(),
        "sha": None,
        "docker_label": None,
        # granite-rt extension: every model served, with what actually runs it.
        "models": {kind: s.describe() for kind, s in (("embedder", state.embedder), ("reranker", state.reranker))
                   if s is not None},
    }
    return JSONResponse(info)


async def _metrics(state: _State, request: Request) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


async def _health(state: _State, request: Request) -> Response:
    healthy = all(b.alive for b in state.batchers.values())
    return Response(status_code=200 if healthy else 503)


def _version() -> str:
    try:
        return importlib.metadata.version("granite-rt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _model_id(state: _State) -> str:
    return state.config.model_id or (state.embedder or state.reranker).name
