"""Model files: corrupted or missing files fail at load naming the file; folders and Hub ids resolve offline."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from granite_rt import Embedder, Reranker
from granite_rt.errors import ModelFileError, ModelNotFoundError
from torch_blocked import run_without_torch


@pytest.fixture
def exported(tiny_embedder_folders, tmp_path) -> Path:
    """A private copy of the exported embedder (manifest with sha256s)."""
    return Path(shutil.copytree(tiny_embedder_folders["export"], tmp_path / "export"))


@pytest.fixture
def hub_layout(tiny_embedder_folders, tmp_path) -> Path:
    """A private copy of the IBM-layout embedder (no manifest, ONNX + OpenVINO)."""
    return Path(shutil.copytree(tiny_embedder_folders["hub"], tmp_path / "hub"))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_sha256_mismatch_names_the_file(exported):
    with open(exported / "onnx" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelFileError, match=r"onnx/model\.onnx does not match granite_rt\.json \(sha256"):
        Embedder(exported, backend="onnx", dtype="fp32")


def test_a_verified_file_is_hashed_again_only_when_it_changes(exported, monkeypatch):
    """The check passed once is remembered per file stat; a rewrite keeping size and mtime is still caught."""
    import os

    from granite_rt import model_folder

    Embedder(exported, backend="onnx", dtype="fp32")  # hashes and remembers
    hashed = []
    real = model_folder.sha256_file
    monkeypatch.setattr(model_folder, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    Embedder(exported, backend="onnx", dtype="fp32")
    assert hashed == []
    data = exported / "onnx" / "model.onnx_data"
    before = data.stat()
    with open(data, "r+b") as fh:  # one byte changed in place, size and mtime put back
        fh.seek(before.st_size // 2)
        byte = fh.read(1)
        fh.seek(before.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ModelFileError, match=r"onnx/model\.onnx_data does not match granite_rt\.json"):
        Embedder(exported, backend="onnx", dtype="fp32")
    assert "model.onnx_data" in hashed


def test_truncated_onnx_external_data_names_the_file(hub_layout):
    _truncate(hub_layout / "onnx" / "model.onnx_data")
    with pytest.raises(ModelFileError, match=r"onnx/model\.onnx \(weights in model\.onnx_data\) cannot be loaded"):
        Embedder(hub_layout, backend="onnx", dtype="fp32")


def test_truncated_onnx_without_manifest_names_the_file(hub_layout):
    _truncate(hub_layout / "onnx" / "model.onnx")
    with pytest.raises(ModelFileError, match=r"onnx/model\.onnx (\(weights in model\.onnx_data\) )?cannot be loaded"):
        Embedder(hub_layout, backend="onnx", dtype="fp32")


def test_truncated_openvino_weights_name_the_file(hub_layout):
    _truncate(hub_layout / "openvino" / "openvino_model.bin")
    with pytest.raises(ModelFileError, match=r"openvino_model\.bin is truncated"):
        Embedder(hub_layout, backend="openvino", dtype="fp32")


def test_corrupted_openvino_xml_names_the_file(hub_layout):
    _truncate(hub_layout / "openvino" / "openvino_model.xml", 0.3)
    with pytest.raises(ModelFileError, match=r"openvino_model\.xml is not a valid OpenVINO IR"):
        Embedder(hub_layout, backend="openvino", dtype="fp32")


@pytest.mark.parametrize("name", ["onnx/model.onnx", "openvino/openvino_model.bin"])
def test_empty_model_file(hub_layout, name):
    (hub_layout / name).write_bytes(b"")
    backend = "onnx" if name.startswith("onnx") else "openvino"
    with pytest.raises(ModelFileError, match=rf"{name} is empty"):
        Embedder(hub_layout, backend=backend, dtype="fp32")


def test_missing_model_file(hub_layout, exported):
    (hub_layout / "openvino" / "openvino_model.bin").unlink()
    with pytest.raises(ModelFileError, match=r"openvino/openvino_model\.bin is missing"):
        Embedder(hub_layout, backend="openvino", dtype="fp32")
    (exported / "onnx" / "model.onnx").unlink()  # listed in the manifest
    with pytest.raises(ModelFileError, match=r"onnx/model\.onnx is missing"):
        Embedder(exported, backend="onnx", dtype="fp32")


def test_missing_or_corrupted_tokenizer(exported):
    (exported / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"tokenizer\.json cannot be read"):
        Embedder(exported, backend="onnx")
    (exported / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match=r"tokenizer\.json is missing"):
        Embedder(exported, backend="onnx")


def test_missing_config_and_no_artifact(hub_layout):
    shutil.rmtree(hub_layout / "onnx")
    shutil.rmtree(hub_layout / "openvino")
    with pytest.raises(ModelFileError, match="no model file found"):
        Embedder(hub_layout)
    (hub_layout / "config.json").unlink()
    with pytest.raises(ModelFileError, match=r"config\.json is missing"):
        Embedder(hub_layout)


def test_unknown_model_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="folder .*deeper' does not exist"):
        Embedder(tmp_path / "nope" / "deeper")
    with pytest.raises(ModelNotFoundError, match="no folder 'no-such-org/no-such-model' here; HF_HUB_OFFLINE is set"):
        Reranker("no-such-org/no-such-model")


def test_hub_id_fetches_only_what_the_backend_needs(tiny_embedder_folders, monkeypatch):
    """Online: the repo's file list narrows allow_patterns to one artifact plus tokenizer/config files."""
    import huggingface_hub

    from granite_rt import hub

    calls = []
    repo_files = ["config.json", "tokenizer.json", "onnx/model.onnx", "onnx/model_qint8_avx512.onnx",
                  "openvino/openvino_model.xml", "openvino/openvino_model.bin", "model.safetensors"]
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo, revision=None, timeout=None: SimpleNamespace(
        siblings=[SimpleNamespace(rfilename=f) for f in repo_files]))

    def fake_snapshot(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tiny_embedder_folders["hub"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    emb = Embedder("ibm-granite/some-model", backend="onnx", dtype="fp32")
    assert emb.encode("water").shape == (emb.dim,)
    repo, kwargs = calls[0]
    assert repo == "ibm-granite/some-model" and kwargs["local_files_only"] is False
    patterns = kwargs["allow_patterns"]
    assert "onnx/model.onnx" in patterns and "tokenizer.json" in patterns and "1_Pooling/config.json" in patterns
    assert not any(p.startswith("openvino/") or "int8" in p or "safetensors" in p for p in patterns)

    calls.clear()
    Embedder("ibm-granite/some-model", backend="openvino", dtype="fp32")
    patterns = calls[0][1]["allow_patterns"]
    assert "openvino/openvino_model.xml" in patterns and "openvino/openvino_model.bin" in patterns
    assert not any(p.startswith("onnx/") for p in patterns)


def test_hub_patterns_for_auto_prefer_int8_then_fp32():
    from granite_rt.model_folder import hub_patterns

    files = ["onnx/model.onnx", "onnx/model_qint8.onnx"]
    assert hub_patterns(("onnx",), ("int8", "fp32"), files)[-4:] == [
        "onnx/model_qint8*.onnx", "onnx/model_qint8*.onnx_data", "onnx/model_quint8*.onnx", "onnx/model_quint8*.onnx_data"]
    assert "onnx/model.onnx" in hub_patterns(("onnx",), ("int8", "fp32"), ["onnx/model.onnx"])
    arm_only = ["onnx/model.onnx", "onnx/model_qint8_arm64.onnx"]  # an INT8 file this x86 CPU cannot run
    if platform.machine().lower() in {"x86_64", "amd64"}:
        assert hub_patterns(("onnx",), ("int8", "fp32"), arm_only)[-2:] == ["onnx/model.onnx", "onnx/model.onnx_data"]
    offline = hub_patterns(("openvino", "onnx"), ("int8", "fp32"))  # no file list: every candidate
    assert {"onnx/model.onnx", "openvino/openvino_model.xml", "onnx/model_qint8*.onnx"} <= set(offline)


def test_hub_id_loads_from_the_offline_cache(tiny_embedder_folders, tiny_reranker_folders, tmp_path):
    """A hand-made HF cache (refs/main → snapshot) with HF_HUB_OFFLINE=1, in a torch-free process."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, folder in (("ibm-granite/tiny-embedder", tiny_embedder_folders["hub"]),
                         ("ibm-granite/tiny-reranker", tiny_reranker_folders["hub"])):
        root = tmp_path / "hub-cache" / ("models--" + repo.replace("/", "--"))
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(commit)
        shutil.copytree(folder, root / "snapshots" / commit)
    code = """
from granite_rt import Embedder, Reranker
emb = Embedder("ibm-granite/tiny-embedder", backend="onnx", dtype="fp32")
rr = Reranker("ibm-granite/tiny-reranker", backend="openvino", dtype="fp32")
print(emb.encode(["water"]).shape, rr.rank("water", ["H2O", "fox"])[0]["corpus_id"] in (0, 1), emb.info["folder"])
"""
    proc = run_without_torch(code, env={"HF_HUB_CACHE": str(tmp_path / "hub-cache")})
    shape, ok, folder = proc.stdout.split(") ")[0] + ")", *proc.stdout.split(") ")[1].split()
    assert shape == f"(1, {Embedder(tiny_embedder_folders['hub'], backend='onnx').dim})" and ok == "True"
    assert folder.endswith(f"snapshots/{commit}")
