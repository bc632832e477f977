"""Files verified without a manifest: a Hugging Face cache snapshot's files are checked against the Hub's sha256
(the LFS blob's name), and ``granite-rt manifest FOLDER`` pins a trusted folder's files; ``info`` says how."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from granite_rt import Embedder
from granite_rt.cli import main
from granite_rt.errors import ModelFileError
from granite_rt.model_folder import hub_sha256

LFS_SUFFIXES = {".onnx", ".onnx_data", ".bin", ".xml"}


def fake_hub_cache(source: Path, cache: Path, repo: str = "ibm-granite/tiny") -> Path:
    """``source``'s files in huggingface_hub's cache layout: blobs named by their etag (sha256 for LFS files, the
    git blob sha1 for the others), the snapshot's files links into them; returns the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / ("0" * 40)
    (root / "blobs").mkdir(parents=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lfs = path.suffix in LFS_SUFFIXES
        etag = (hashlib.sha256(data) if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data)).hexdigest()
        blob = root / "blobs" / etag
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)
    return snapshot


@pytest.fixture
def snapshot(tiny_embedder_folders, tmp_path) -> Path:
    return fake_hub_cache(tiny_embedder_folders["hub"], tmp_path / "hub-cache")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_hub_sha256_is_the_lfs_blob_name(snapshot):
    onnx = snapshot / "onnx" / "model.onnx"
    assert hub_sha256(onnx) == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert hub_sha256(snapshot / "config.json") is None  # a git blob sha1, not a sha256


@pytest.mark.parametrize("backend,weights", [("onnx", "onnx/model.onnx_data"), ("openvino", "openvino/openvino_model.bin")])
def test_a_flipped_byte_in_a_hub_cache_blob_is_caught(snapshot, backend, weights):
    model = Embedder(snapshot, backend=backend, dtype="fp32")
    assert "Hugging Face Hub" in model.info["verified"], model.info["verified"]
    blob = (snapshot / weights).resolve()
    _flip_byte(blob, blob.stat().st_size // 2)  # same size: only the hash can tell
    with pytest.raises(ModelFileError, match="does not match the Hugging Face Hub's sha256"):
        Embedder(snapshot, backend=backend, dtype="fp32")


def test_a_plain_folder_says_it_is_not_verified_and_manifest_pins_it(tiny_embedder_folders, tmp_path, capsys):
    folder = tmp_path / "plain"
    shutil.copytree(tiny_embedder_folders["hub"], folder)
    assert "not verified" in Embedder(folder, backend="onnx", dtype="fp32").info["verified"]
    assert main(["manifest", str(folder)]) == 0
    manifest = json.loads((folder / "granite_rt.json").read_text())
    assert manifest["kind"] == "embedder" and "granite-rt manifest" in manifest["written_by"]
    assert {a["path"] for a in manifest["artifacts"]} == {"onnx/model.onnx", "openvino/openvino_model.xml"}
    pinned = Embedder(folder, backend="openvino", dtype="fp32")
    assert pinned.info["verified"] == "sha256 of every file against granite_rt.json"
    _flip_byte(folder / "openvino" / "openvino_model.bin", 100)
    with pytest.raises(ModelFileError, match="does not match granite_rt.json"):
        Embedder(folder, backend="openvino", dtype="fp32")
    assert main(["manifest", str(folder)]) == 2  # exists: --force to replace
    assert "--force" in capsys.readouterr().err


def test_info_report_says_how_the_files_are_checked(snapshot):
    from granite_rt.report import info_report

    text = info_report(str(snapshot))
    assert "its files are checked at load: sha256 of every file against the Hugging Face Hub's" in text
