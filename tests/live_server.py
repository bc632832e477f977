"""What the server tests share: uvicorn serving the app on a free loopback port, a gate that holds
model calls in flight, the corpus of real texts, and the comparison with in-process results."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from granite_rt.server import uvicorn_config
from granite_rt.server.app import ServerConfig, create_app

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUERY = "what is the chemical formula of water?"


def corpus() -> list[str]:
    """Real sentences of many languages and lengths (Tatoeba) and long abstracts (Cranfield)."""
    texts: list[str] = []
    for lang in ("deu", "fra", "jpn", "rus", "ara", "cmn"):
        texts += (DATA / "tatoeba" / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()[:12]
    abstracts = (DATA / "cranfield" / "cran.all.1400").read_text(encoding="utf-8").split(".W\n")[1:13]
    texts += [" ".join(a.split(".I ")[0].split()) for a in abstracts]
    return texts


TEXTS = corpus()


class LiveServer:
    """The app under uvicorn (configured as ``granite-rt serve`` configures it) in a thread, on a socket
    bound to a free loopback port."""

    def __init__(self, config: ServerConfig, embedder=None, reranker=None) -> None:
        self.app = create_app(config, embedder, reranker)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(self.app, config, log_level="warning",
                                                    timeout_graceful_shutdown=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "server did not shut down"

    def client(self, **kw) -> "httpx.Client":
        return httpx.Client(base_url=self.url, timeout=60, **kw)


class Gated:
    """A real service whose model calls wait until ``release`` is set: holds requests in flight."""

    def __init__(self, service) -> None:
        self.service = service
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.service, name)

    def run(self, key, items):
        self.entered.set()
        assert self.release.wait(30), "test never released the gate"
        return self.service.run(key, items)


def close(answer, expected) -> bool:
    return np.allclose(np.asarray(answer, dtype=np.float32), expected, atol=1e-5, rtol=0)


def in_background(fn):
    """Start ``fn`` in a thread; the returned callable joins it and gives its result."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()

    def join():
        thread.join(60)
        return box["result"]
    return join
