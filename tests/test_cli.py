"""The installed ``granite-rt`` entry point, run as a subprocess on the tiny exported models.

Outputs are compared with the Python API in this process; exit codes and the one-line error
contract (0 ok, 2 usage, 1 failure, traceback only with --debug) are checked on real failures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from torch_blocked import blocker


ROOT = Path(__file__).resolve().parents[1]
GRANITE_RT = shutil.which("granite-rt", path=str(Path(sys.executable).parent)) or shutil.which("granite-rt")
TEXTS = ["what is the chemical formula of water?", "Water is H2O.", "Der Hund schläft.", "", "日本語のテキスト"]
QUERY = "what is the chemical formula of water?"

pytestmark = pytest.mark.skipif(GRANITE_RT is None, reason="the granite-rt entry point is not installed")


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``granite-rt ARGS`` with ``stdin`` (else /dev/null: never a terminal)."""
    return subprocess.run([GRANITE_RT, *args], input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def embedder_folder(tiny_embedder_folders) -> str:
    return str(tiny_embedder_folders["export"])


@pytest.fixture(scope="module")
def reranker_folder(tiny_reranker_folders) -> str:
    return str(tiny_reranker_folders["export"])


MODEL_FLAGS = ("--backend", "onnx", "--dtype", "fp32")


# ------------------------------------------------------------------------------ help, usage

def test_help_lists_every_command_and_needs_neither_torch_nor_a_backend():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("embed", "rerank", "export", "info", "eval", "bench", "serve"):
        assert command in result.stdout
    probe = python(
        "import sys; sys.modules['torch'] = None\n"
        "from granite_rt.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert main(['embed', '--help']) == 0\n"
        "loaded = sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'starlette', 'uvicorn') if sys.modules.get(m) is not None)\n"
        "print('LOADED', loaded)")
    assert probe.returncode == 0, probe.stderr
    assert "LOADED []" in probe.stdout


@pytest.mark.parametrize("args, needle", [
    ((), "required: COMMAND"),
    (("bogus",), "invalid choice: 'bogus'"),
    (("embed",), "MODEL"),
    (("embed", "m", "x", "--batch-size", "0"), "--batch-size"),
    (("rerank", "m", "doc"), "--query"),
    (("embed", "m", "x", "--input", "f.txt"), "not both"),
    (("embed", "m", "x", "--format", "npy"), "--format npy needs --output"),
    (("embed", "m", "x", "--output", "vectors.csv"), "vectors.csv"),
    (("embed", "m"), "no texts in stdin"),
    (("embed", "m", "--input", "/nonexistent/texts.txt"), "/nonexistent/texts.txt"),
    (("serve",), "--embedder"),
    (("serve", "--embedder", "m", "--port", "70000"), "--port"),
    (("serve", "--embedder", "m", "--max-wait-ms", "-1"), "--max-wait-ms"),
])
def test_usage_errors_exit_2_with_one_line(args, needle):
    assert_one_line_error(cli(*args), 2, needle)


def test_runtime_failure_exits_1_with_one_line_and_traceback_only_with_debug(tmp_path):
    missing = str(tmp_path / "no-such-model")
    assert_one_line_error(cli("embed", missing, "x"), 1, "granite-rt embed: error:", "no-such-model")
    debug = cli("--debug", "embed", missing, "x")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_bad_jsonl_input_names_the_line(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    assert_one_line_error(cli("embed", "m", "--input", str(source)), 2, "line 2", '"text"')


# ----------------------------------------------------------------------------------- embed

def test_embed_writes_npy_equal_to_the_python_api(tmp_path, embedder_folder, loaded_tiny_embedder):
    out = tmp_path / "vectors.npy"
    result = cli("embed", embedder_folder, *TEXTS, "--output", str(out), *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    vectors = np.load(out)
    assert vectors.shape == (len(TEXTS), loaded_tiny_embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, loaded_tiny_embedder.encode(TEXTS), atol=1e-6)
    assert "wrote 5 embeddings" in result.stderr


def test_embed_jsonl_file_in_and_out_keeps_ids(tmp_path, embedder_folder, loaded_tiny_embedder):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "vectors.jsonl"
    result = cli("-q", "embed", embedder_folder, "--input", str(source), "--output", str(out),
                 "--truncate-dim", "16", "--batch-size", "2", *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith("granite-rt embed: warning: ") for line in result.stderr.splitlines())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"doc-{i}" for i in range(len(TEXTS))]
    expected = loaded_tiny_embedder.encode(TEXTS, truncate_dim=16)
    np.testing.assert_allclose([r["embedding"] for r in records], expected, atol=1e-6)


def test_embed_reads_stdin_lines_and_prints_jsonl(embedder_folder, loaded_tiny_embedder):
    lines = ["first line", "second line", "third"]
    result = cli("embed", embedder_folder, "--format", "jsonl", *MODEL_FLAGS, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2]
    np.testing.assert_allclose([r["embedding"] for r in records], loaded_tiny_embedder.encode(lines), atol=1e-6)


def test_embed_without_output_prints_a_summary(embedder_folder, loaded_tiny_embedder):
    result = cli("embed", embedder_folder, *TEXTS[:2], *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    first, *lines = result.stdout.splitlines()
    assert first.startswith(f"2 texts -> (2, {loaded_tiny_embedder.dim}) float32")
    # issue 18: the few facts that matter, one aligned "key  value" line each, not ~20 keys on one line
    summary = [line for line in lines if not line.startswith("#")]
    assert [line.split()[0] for line in summary] == ["model", "runs", "why"]
    assert len({len(line) - len(line.lstrip()) for line in summary}) == 1
    assert len({re.match(r"\s+(model|runs on|why)\s+", line).end() for line in summary}) == 1  # values aligned
    assert summary[1].split(None, 2)[2] == "cpu with onnx, fp32: onnx/model.onnx"
    assert "cache_dir" not in result.stdout and "parallel_requests" not in result.stdout
    rows = [line for line in lines if line.startswith("#")]
    expected = loaded_tiny_embedder.encode(TEXTS[:2])
    assert rows[0].startswith(f"#0 [{expected[0][0]:.4f}, ") and rows[0].endswith(TEXTS[0])


def test_embed_json_summary_carries_the_full_info(embedder_folder, loaded_tiny_embedder):
    result = cli("embed", embedder_folder, *TEXTS[:2], "--json", *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["shape"] == [2, loaded_tiny_embedder.dim] and summary["dtype"] == "float32"
    assert set(summary["info"]) == set(loaded_tiny_embedder.info)
    assert_one_line_error(cli("embed", embedder_folder, "x", "--json", "--output", "v.npy"), 2, "--format jsonl")


@pytest.mark.parametrize("command, folder, needle", [
    ("embed", "reranker", "is a reranker: use 'granite-rt rerank'"),
    ("rerank", "embedder", "is an embedder: use 'granite-rt embed'"),
])
def test_a_model_of_the_other_kind_names_the_cli_command(command, folder, needle, embedder_folder, reranker_folder):
    """CLI errors speak CLI: not 'load it with granite_rt.Embedder' (issue 18)."""
    model = reranker_folder if folder == "reranker" else embedder_folder
    args = (command, model, "--query", QUERY, "doc") if command == "rerank" else (command, model, "doc")
    result = cli(*args, *MODEL_FLAGS)
    assert_one_line_error(result, 1, f"granite-rt {command}: error: {model} {needle}")
    assert "granite_rt." not in result.stderr


def test_embed_output_precision(tmp_path, embedder_folder, loaded_tiny_embedder):
    out = tmp_path / "binary.npy"
    result = cli("embed", embedder_folder, *TEXTS, "--precision", "ubinary", "--output", str(out),
                 *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    packed = np.load(out)
    assert packed.dtype == np.uint8 and packed.shape == (len(TEXTS), loaded_tiny_embedder.dim // 8)
    np.testing.assert_array_equal(packed, np.packbits(loaded_tiny_embedder.encode(TEXTS) > 0, axis=-1))


def test_embed_long_text_window(tmp_path, embedder_folder, loaded_tiny_embedder):
    long = " ".join(TEXTS * 30)  # several windows of the tiny model's 128 tokens
    out = tmp_path / "window.npy"
    result = cli("embed", embedder_folder, long, TEXTS[0], "--long-text", "window", "--window-tokens", "64",
                 "--window-stride", "16", "--output", str(out), *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    expected = loaded_tiny_embedder.encode([long, TEXTS[0]], long_text="window", window_tokens=64, window_stride=16)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    assert np.abs(expected[0] - loaded_tiny_embedder.encode(long)).max() > 1e-4  # the truncated vector would fail


# ---------------------------------------------------------------------------------- rerank

def test_rerank_prints_the_ranking_like_the_seed_example(reranker_folder, loaded_tiny_reranker):
    docs = TEXTS[1:]
    result = cli("rerank", reranker_folder, "--query", QUERY, *docs, *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    expected = loaded_tiny_reranker.rank(QUERY, docs)
    assert result.stdout.splitlines() == [f"- #{r['corpus_id']} ({r['score']:.2f}): {docs[r['corpus_id']]}"
                                          for r in expected]


def test_rerank_json_top_k_from_a_file(tmp_path, reranker_folder, loaded_tiny_reranker):
    docs = TEXTS[1:]
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(docs) + "\n")
    result = cli("rerank", reranker_folder, "--query", QUERY, "--input", str(source), "--top-k", "2",
                 "--json", *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    ranking = json.loads(result.stdout)
    expected = loaded_tiny_reranker.rank(QUERY, docs, top_k=2)
    assert [r["corpus_id"] for r in ranking] == [e["corpus_id"] for e in expected]
    np.testing.assert_allclose([r["score"] for r in ranking], [e["score"] for e in expected], atol=1e-6)
    assert [r["text"] for r in ranking] == [docs[e["corpus_id"]] for e in expected]


# ------------------------------------------------------------------ delegated commands

def test_export_without_the_extra_says_how_to_install_it():
    probe = python("import sys; sys.modules['granite_export'] = None\n"
                   "from granite_rt.cli import main\n"
                   "sys.exit(main(['export', 'some/model', '--out', 'x']))")
    assert_one_line_error(probe, 1, "pip install 'granite-rt[export]'")


@pytest.mark.parametrize("blocked, missing", [
    (("torch", "transformers", "sentence_transformers"), "torch, transformers, sentence_transformers"),
    (("nncf",), "nncf"),
])
def test_export_with_granite_export_but_without_the_extra_says_how_to_install_it(tmp_path, blocked, missing):
    """pip install granite-rt ships granite_export; torch & co come with the extra (issue 18: a bare
    ModuleNotFoundError: No module named 'transformers' before)."""
    probe = python(blocker(blocked) + "from granite_rt.cli import main\n"
                   f"sys.exit(main(['export', 'some-org/some-model', '--out', {str(tmp_path / 'x')!r}]))")
    assert_one_line_error(probe, 1, "granite-rt export:", f"(missing: {missing})", "pip install 'granite-rt[export]'")
    assert not (tmp_path / "x").exists()


def test_export_for_formats_that_do_not_need_nncf_runs_without_it(tmp_path):
    probe = python(blocker(("nncf",)) + "from granite_export.__main__ import missing_modules\n"
                   "print(missing_modules(('onnx', 'onnx-int8', 'openvino')), missing_modules(('openvino-int8',)))")
    assert probe.stdout.split() == ["[]", "['nncf']"], probe.stderr


@pytest.mark.skipif(importlib.util.find_spec("granite_export.__main__") is None, reason="export stage absent")
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_export_shows_the_traceback(tmp_path, where):
    args = ["export", str(tmp_path / "no-such-checkpoint"), "--out", str(tmp_path / "out")]
    assert_one_line_error(cli(*args), 2, "does not exist")
    debug = cli("--debug", *args) if where == "before" else cli(*args, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr, debug.stderr


@pytest.mark.skipif(importlib.util.find_spec("granite_export.__main__") is None, reason="export stage absent")
def test_export_delegates_to_the_export_stage():
    result = cli("export", "--help")
    assert result.returncode == 0 and "--out" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("granite_rt.devices") is None, reason="devices module absent")
def test_info_prints_the_device_report(embedder_folder):
    from granite_rt.report import info_report

    result = cli("info", embedder_folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == info_report(embedder_folder).strip()


def test_info_json_carries_the_inventory_and_the_model_plan(embedder_folder, loaded_tiny_embedder):
    result = cli("info", embedder_folder, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    import onnxruntime

    assert report["inventory"]["engines"]["onnx"]["version"] == onnxruntime.__version__
    assert report["model"]["kind"] == "embedder" and report["model"]["dim"] == loaded_tiny_embedder.dim
    assert [a["path"] for a in report["model"]["artifacts"]] == ["onnx/model.onnx"]
    assert report["model"]["auto_placements"][0]["artifact"]["path"] == "onnx/model.onnx"


def test_eval_has_its_own_usage():
    result = cli("eval", "--help")
    assert result.returncode == 0 and "usage" in result.stdout.lower()


def test_bench_delegates_to_bench_or_explains_its_absence():
    result = cli("bench", "--help")
    if (ROOT / "bench" / "__main__.py").exists() or (ROOT / "bench" / "run.py").exists():
        assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr
    else:
        assert_one_line_error(result, 1, "source checkout")


# ----------------------------------------------------------------------------------- serve

def test_serve_without_the_extra_says_how_to_install_it():
    probe = python("import sys; sys.modules['starlette'] = None\n"
                   "from granite_rt.cli import main\n"
                   "sys.exit(main(['serve', '--embedder', 'm']))")
    assert_one_line_error(probe, 1, "pip install 'granite-rt[server]'")


def test_serve_answers_over_http_and_exits_cleanly_on_sigterm(embedder_folder, loaded_tiny_embedder):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([GRANITE_RT, "serve", "--embedder", embedder_folder, "--port", str(port),
                             *MODEL_FLAGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        answer = httpx.post(url + "/embed", json={"inputs": TEXTS}, timeout=30)
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json(), loaded_tiny_embedder.encode(TEXTS), atol=1e-5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        loaded = [line for line in err.splitlines() if "granite-rt serves embedder" in line]
        assert len(loaded) == 1 and all(f"{key}=" in loaded[0] for key in ("backend", "device", "dtype", "file")), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rerank_raw_scores_and_max_query_tokens(reranker_folder, loaded_tiny_reranker):
    docs = TEXTS[1:]
    query = QUERY + " with many more words than four"
    result = cli("rerank", reranker_folder, "--query", query, *docs, "--raw-scores", "--max-query-tokens", "4",
                 "--json", *MODEL_FLAGS)
    assert result.returncode == 0, result.stderr
    expected = loaded_tiny_reranker.rank(query, docs, activation="identity", max_query_tokens=4)
    got = json.loads(result.stdout)
    assert [r["corpus_id"] for r in got] == [e["corpus_id"] for e in expected]
    np.testing.assert_allclose([r["score"] for r in got], [e["score"] for e in expected], atol=1e-6)
    sigmoid = loaded_tiny_reranker.rank(query, docs, max_query_tokens=4)
    assert not np.allclose([r["score"] for r in got], [s["score"] for s in sigmoid])
