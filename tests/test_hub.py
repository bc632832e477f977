"""Model names → folder or Hub (granite_rt.hub, through model_folder.resolve_model): a missing local path
never goes to the Hub; an unreachable Hub fails at once, in one line, without huggingface_hub's retries."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from granite_rt import Embedder, Reranker, hub
from granite_rt.errors import ModelNotFoundError
from granite_rt.model_folder import resolve_model


@pytest.fixture
def no_hub(monkeypatch):
    """Any Hub call fails the test: a path-looking name must never reach huggingface_hub."""
    import huggingface_hub

    def called(*args, **kwargs):
        raise AssertionError(f"the Hub was asked: {args} {kwargs}")

    for name in ("model_info", "snapshot_download", "list_repo_files"):
        monkeypatch.setattr(huggingface_hub, name, called)
    monkeypatch.setattr(hub, "offline", lambda: False)


@pytest.mark.parametrize("name", ["models/granite-reranker", "./granite-reranker", "../no-such-folder",
                                  "models/org/name", "~/no-such-granite-folder", "no-such-folder"])
def test_a_path_that_does_not_exist_is_named_and_never_sent_to_the_hub(name, tmp_path, monkeypatch, no_hub):
    (tmp_path / "models").mkdir()  # the README's folder exists, the model in it does not
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=f"folder '{name}' does not exist"):
        Reranker(name)


def test_a_pathlike_and_a_file_are_local_errors(tmp_path, no_hub):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Embedder(tmp_path / "org" / "name")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file, not a model folder"):
        Embedder(str(tmp_path / "model.onnx"))


@pytest.mark.parametrize("name, is_hub", [
    ("ibm-granite/granite-embedding-97m-multilingual-r2", True), ("org/name.v2", True),
    ("./org/name", False), ("org/name/sub", False), ("/org/name", False), ("~/org", False),
    ("org\\name", False), ("C:/models/x", False), (".hidden/name", False), ("single", False),
])
def test_hub_ids_and_paths_are_told_apart(name, is_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id(name) is is_hub


def test_a_first_component_that_exists_here_makes_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id("org/name")
    (tmp_path / "org").mkdir()
    assert not hub.is_hub_id("org/name") and hub.looks_like_path("org/name")


def test_hub_lookup_does_not_retry_in_process(monkeypatch, tmp_path):
    """One request: a failing connection means 'not reachable', then the (empty) cache is tried."""
    import huggingface_hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "model_info", refuse)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("nobody/no-such-model")
    assert len(calls) == 1
    assert str(err.value) == ("no folder 'nobody/no-such-model' here; the Hugging Face Hub is not reachable "
                              "([Errno 111] Connection refused), and it is not in the local cache")


# ------------------------------------------------------------- the CLI and the API in a child process

def _refused_endpoint() -> str:
    """A loopback URL nothing listens on (connection refused at once), as an unreachable Hub."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


CHILD = """
import sys, time
import huggingface_hub.hf_api, huggingface_hub._snapshot_download  # imported before the clock starts:
import granite_rt.embedder, granite_rt.reranker                       # only resolving the name is timed
from granite_rt.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(f"ELAPSED {time.perf_counter() - start:.3f}")
sys.exit(code)
"""


def _run_cli(args: list[str], cwd: Path, endpoint: str, offline: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(cwd / "hf-home"), HF_HUB_CACHE=str(cwd / "hf-home" / "hub"))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)
    elapsed = float(proc.stdout.split("ELAPSED")[-1]) if "ELAPSED" in proc.stdout else float("inf")
    return proc, elapsed


def _assert_one_line_at_once(proc: subprocess.CompletedProcess, elapsed: float, *needles: str) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no "Retrying in 1s [Retry 1/5]", no "could not list the files" warning
    assert "Retry" not in proc.stderr and "local_files_only" not in proc.stderr and "HF_HUB_OFFLINE=0" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert elapsed < 2.0, f"took {elapsed:.1f} s: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("offline", [False, True])
def test_cli_missing_local_folder_fails_at_once_in_one_line(tmp_path, offline):
    (tmp_path / "models").mkdir()
    proc, elapsed = _run_cli(["rerank", "models/granite-reranker", "--query", "q", "doc"], tmp_path,
                             _refused_endpoint(), offline=offline)
    _assert_one_line_at_once(proc, elapsed, "granite-rt rerank: error: folder 'models/granite-reranker' does not exist")


def test_cli_hub_id_with_the_hub_unreachable_fails_at_once_in_one_line(tmp_path):
    proc, elapsed = _run_cli(["embed", "nobody/no-such-model", "x"], tmp_path, _refused_endpoint())
    _assert_one_line_at_once(proc, elapsed, "no folder 'nobody/no-such-model' here",
                             "the Hugging Face Hub is not reachable", "not in the local cache")


def test_cli_hub_id_offline_and_not_cached(tmp_path):
    proc, elapsed = _run_cli(["embed", "nobody/no-such-model", "x"], tmp_path, _refused_endpoint(), offline=True)
    _assert_one_line_at_once(proc, elapsed, "HF_HUB_OFFLINE is set, and it is not in the local Hugging Face cache")


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """The Hub's answer for a repo that does not exist: 404 with X-Error-Code RepoNotFound."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"error": "Repository not found"}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_cli_hub_id_the_hub_does_not_have(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc, elapsed = _run_cli(["embed", "nobody/no-such-model", "x"], tmp_path,
                                 f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    _assert_one_line_at_once(proc, elapsed, "the Hugging Face Hub has no repo 'nobody/no-such-model'")
