"""granite_rt.bundle and ``granite-rt bundle``: exactly one placement's files, loadable offline, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from granite_rt import Embedder
from granite_rt.bundle import bundle, verify_bundle
from granite_rt.cli import main
from granite_rt.errors import BackendUnavailableError, BundleError, DeviceUnavailableError, ModelFileError
from granite_rt.model_folder import artifact_files, load_spec, sha256_file
from torch_blocked import run_without_torch

TEXTS = ["what is the chemical formula of water?", "Water is H2O.", "Der Hund schläft.", ""]
# What the runtime reads besides the artifact, as the tiny export has it (no license file in it).
META = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
        "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"}


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["bundle", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("backend,dtype,artifact", [("onnx", "int8", "onnx/model_qint8.onnx"),
                                                    ("openvino", "fp32", "openvino/openvino_model.xml")])
def test_bundle_holds_exactly_one_placement_and_loads_like_its_source(exported_tiny_embedder, tmp_path, capsys,
                                                                      backend, dtype, artifact):
    out = tmp_path / "bundle"
    code, err = run_cli(capsys, str(exported_tiny_embedder), "--out", str(out), "--backend", backend, "--dtype", dtype)
    assert code == 0, err
    assert f"{backend} {dtype} ({artifact})" in err
    parts = {p.relative_to(exported_tiny_embedder).as_posix()
             for p in artifact_files(exported_tiny_embedder, load_spec(out).artifacts[0])}
    assert len(parts) == 2 and artifact in parts              # the graph and its weights (.onnx_data / .bin)
    assert files_in(out) == parts | META | {"granite_rt.json"}  # nothing else: not the other four artifacts
    manifest = json.loads((out / "granite_rt.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == [artifact]
    assert set(manifest["artifacts"][0]["files"]) == parts
    listed = manifest["bundle"]["files"]
    assert set(listed) == files_in(out) - {"granite_rt.json"}
    assert all(sha256_file(out / rel) == digest for rel, digest in listed.items())
    assert all(sha256_file(out / rel) == sha256_file(exported_tiny_embedder / rel) for rel in listed)
    source = json.loads((exported_tiny_embedder / "granite_rt.json").read_text())
    assert manifest["artifacts"][0]["parity"] == next(a for a in source["artifacts"] if a["path"] == artifact)["parity"]
    verify_bundle(out)
    with Embedder(out) as shipped, Embedder(exported_tiny_embedder, backend=backend, dtype=dtype) as original:
        assert shipped.info["file"] == artifact and shipped.info["backend"] == backend
        np.testing.assert_array_equal(shipped.encode(TEXTS), original.encode(TEXTS))


def test_bundle_of_a_hub_layout_folder_writes_a_manifest(tiny_embedder_folders, tmp_path):
    hub = tiny_embedder_folders["hub"]  # IBM's layout: no granite_rt.json
    made = bundle(hub, tmp_path / "b", backend="openvino", dtype="fp32")
    assert made.artifact.path == "openvino/openvino_model.xml" and made.artifact.sha256
    assert files_in(made.folder) == set(made.files)
    assert made.size == sum((made.folder / rel).stat().st_size for rel in made.files)
    manifest = json.loads((made.folder / "granite_rt.json").read_text())
    assert manifest["kind"] == "embedder" and manifest["bundle"]["source"] == str(hub)
    with Embedder(made.folder) as shipped, Embedder(hub, backend="openvino", dtype="fp32") as original:
        np.testing.assert_array_equal(shipped.encode(TEXTS), original.encode(TEXTS))


def test_bundle_loads_offline_with_the_network_blocked_and_no_hub_import(exported_tiny_embedder, tmp_path):
    out = bundle(exported_tiny_embedder, tmp_path / "b").folder
    expected = Embedder(out).encode(TEXTS)
    code = f"""
import json, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network is off in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from granite_rt import Embedder
vectors = Embedder({str(out)!r}).encode({TEXTS!r})
print(json.dumps({{"vectors": vectors.tolist(), "hub": "huggingface_hub" in sys.modules}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hub"] is False  # a bundle never touches the Hub client
    np.testing.assert_allclose(np.array(result["vectors"]), expected, atol=1e-6)


def test_bundle_loads_without_torch(exported_tiny_embedder, tmp_path):
    out = bundle(exported_tiny_embedder, tmp_path / "b", dtype="fp32").folder
    proc = run_without_torch(f"from granite_rt import Embedder; print(Embedder({str(out)!r}).encode('x').shape)")
    assert proc.stdout.strip().splitlines()[-1] == "(64,)"


def test_a_bundle_asked_for_another_placement_says_what_it_holds(exported_tiny_embedder, tmp_path):
    out = bundle(exported_tiny_embedder, tmp_path / "b").folder
    with pytest.raises(ModelFileError) as fp32:
        Embedder(out, backend="onnx", dtype="fp32", device="cpu")
    message = str(fp32.value)
    assert "onnx/model_qint8.onnx (onnx int8)" in message           # what it has
    assert "bundle holding only onnx int8" in message
    assert f"granite-rt bundle {exported_tiny_embedder} --out DIR --backend onnx --dtype fp32" in message
    with pytest.raises(DeviceUnavailableError, match="bundle holding only onnx int8.*--backend openvino --dtype fp32"):
        Embedder(out, backend="openvino")
    assert "\n" not in message


def test_a_bundle_missing_a_file_names_it_at_load_and_verify_finds_a_changed_one(exported_tiny_embedder, tmp_path):
    out = bundle(exported_tiny_embedder, tmp_path / "b").folder
    tokenizer = (out / "tokenizer.json").read_text()
    (out / "tokenizer.json").write_text(tokenizer + " ")  # still valid JSON, other bytes
    with pytest.raises(ModelFileError, match="tokenizer.json does not match the bundle"):
        verify_bundle(out)
    (out / "sentence_bert_config.json").unlink()  # would silently change max_length: refused at load
    with pytest.raises(ModelFileError, match="missing sentence_bert_config.json"):
        Embedder(out)


def test_bundle_replaces_a_previous_bundle(exported_tiny_embedder, tmp_path):
    out = tmp_path / "b"
    bundle(exported_tiny_embedder, out, dtype="fp32")
    made = bundle(exported_tiny_embedder, out, dtype="int8")
    assert made.artifact.path == "onnx/model_qint8.onnx"
    assert not (out / "onnx" / "model.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folders left behind


def test_bundle_bad_inputs_are_one_line_errors(exported_tiny_embedder, tiny_embedder_folders, tmp_path, capsys):
    source = str(exported_tiny_embedder)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        ((str(tiny_embedder_folders["export"]), "--out", str(tmp_path / "o1"), "--dtype", "int8"),
         "has no onnx int8 model file to bundle; it has: onnx fp32 (onnx/model.onnx)"),
        ((source, "--out", str(tmp_path / "o2"), "--backend", "openvino", "--dtype", "fp16"),
         "has no openvino fp16 model file to bundle"),
        ((source, "--out", str(a_file)), "is a file, not a folder"),
        ((source, "--out", str(a_file / "sub")), "is a file, not a folder"),
        ((source, "--out", str(foreign)), "is not empty and is not a previous bundle"),
        ((source, "--out", "/proc/granite-rt-bundle"), "cannot create it"),
        ((str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")), "does not exist"),
    ]
    for args, needle in cases:
        code, err = run_cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and needle in lines[0], (args, err)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    code, err = run_cli(capsys, source, "--out", str(tmp_path / "o4"), "--dtype", "bf16")
    assert code == 2 and "invalid choice: 'bf16'" in err
    with pytest.raises(BundleError):
        bundle(source, a_file)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tensorrt'; registered: openvino, onnx"):
        bundle(source, tmp_path / "o5", backend="tensorrt")
