"""One contender in its own process: load once, then time calls the orchestrator sends.

Protocol: one JSON object per line on stdin, one reply per line on a private copy of stdout
(the libraries' own prints go to stderr). Requests: {"op": "load", "contender", "kind",
"checkpoint", "exported"} → {"load_s", "precision"} (precision where the contender reports it);
{"op": "call", "texts"} or {"op": "call", "query", "passages"} → {"seconds"}. An exception becomes
{"error": "..."}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class _State:
    call = None
    kind = ""


def handle(msg: dict, state: _State) -> dict:
    """Serve one request."""
    if msg["op"] == "load":
        from bench import adapters
        from bench.contenders import by_name

        start = time.perf_counter()
        state.call = adapters.load(by_name(msg["contender"]), msg["kind"], Path(msg["checkpoint"]),
                                   Path(msg["exported"]))
        state.kind = msg["kind"]
        return {"load_s": time.perf_counter() - start, "precision": getattr(state.call, "precision", None)}
    if msg["op"] == "call":
        args = (msg["texts"],) if state.kind == "embedder" else (msg["query"], msg["passages"])
        start = time.perf_counter()
        state.call(*args)
        return {"seconds": time.perf_counter() - start}
    raise ValueError(f"unknown op {msg['op']!r}")


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    state = _State()
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line), state)
        except Exception as exc:  # reported to the orchestrator, which marks the contender failed
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
