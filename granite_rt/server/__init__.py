"""HTTP server for embeddings and reranking, compatible with Hugging Face TEI and OpenAI clients.

Needs the ``server`` extra (``pip install 'granite-rt[server]'``: starlette + uvicorn). Modules:
``schemas`` (request parsing), ``batcher`` (dynamic batching), ``models`` (runtime adapters),
``metrics`` (Prometheus text), ``app`` (routes). ``serve`` loads the models and runs uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import uvicorn

    from .app import ServerConfig

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(config: "ServerConfig", embedder: str | None = None, reranker: str | None = None,
          backend: str = "auto", device: str = "auto", dtype: str = "auto", batch_size: int = 32,
          bucket_steps: int | None = 4) -> None:
    """Load the models, then serve until SIGINT/SIGTERM; in-flight requests finish before it returns.
    ``bucket_steps``: see ``models.load_services``."""
    import uvicorn

    from .app import create_app
    from .models import load_services

    embedding, rerank = load_services(embedder, reranker, backend=backend, device=device, dtype=dtype,
                                      batch_size=batch_size, bucket_steps=bucket_steps)
    app = create_app(config, embedding, rerank)
    server = uvicorn.Server(uvicorn_config(app, config))
    log = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config: the server's own log
    for service in (embedding, rerank):
        if service is not None:
            log.info("granite-rt serves %s", service.summary())
    with _signals_end_quietly():
        server.run()


def uvicorn_config(app: Any, config: "ServerConfig", **overrides: Any) -> "uvicorn.Config":
    """uvicorn's settings for the app. No ``limit_concurrency``: uvicorn would answer connections past it
    with a bare text/plain 503 before the app sees them; the app's own admission (``--max-concurrent-requests``,
    checked before a body is read) answers JSON 429 with Retry-After instead."""
    import uvicorn

    options = {"host": config.host, "port": config.port, "log_level": config.log_level,
               "timeout_graceful_shutdown": int(config.batcher.request_timeout_s) + 5, **overrides}
    return uvicorn.Config(app, **options)


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """Make SIGINT/SIGTERM a clean exit (status 0) once uvicorn has shut down gracefully.

    uvicorn handles the signal itself, finishes in-flight requests, then re-raises it to the
    handler that was installed before; that handler is this no-op rather than the default
    (death by signal, or KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
