"""HTTP server for embeddings and reranking, compatible with Hugging Face TEI and OpenAI clients.

Needs the ``server`` extra (``pip install 'granite-rt[server]'``: starlette + uvicorn). Modules:
``schemas`` (request parsing), ``batcher`` (dynamic batching), ``models`` (runtime adapters),
``metrics`` (Prometheus text), ``app`` (routes). ``serve`` loads the models and runs uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import ServerConfig


def serve(config: "ServerConfig", embedder: str | None = None, reranker: str | None = None,
          backend: str = "auto", device: str = "auto", dtype: str = "auto", batch_size: int = 32) -> None:
    """Load the models, then serve until SIGINT/SIGTERM; in-flight requests finish before exit."""
    import uvicorn

    from .app import create_app
    from .models import load_services

    embedding, rerank = load_services(embedder, reranker, backend=backend, device=device, dtype=dtype,
                                      batch_size=batch_size)
    app = create_app(config, embedding, rerank)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                timeout_graceful_shutdown=int(config.batcher.request_timeout_s) + 5,
                limit_concurrency=config.batcher.max_pending * 2 + 16)
