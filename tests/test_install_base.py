"""The smallest install, ``pip install granite-rt`` (onnxruntime, no OpenVINO), runs INT8 and fp32.

The child interpreter sees only what that install puts in site-packages: the dependency closure of
granite-rt's required (non-extra) dependencies, linked from this venv into a folder of its own and
run with ``python -I -S`` (no site-packages, no .pth files), so neither OpenVINO's modules nor its
distribution metadata, nor torch, can be found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from granite_rt import Embedder

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["what is the chemical formula of water?", "Water is H2O.", "日本語のテキスト", ""]


def base_closure(name: str = "granite-rt") -> dict[str, Distribution]:
    """The distributions ``pip install NAME`` installs: NAME's requirements without extras, recursively."""
    found: dict[str, Distribution] = {}
    todo = [name]
    while todo:
        key = canonicalize_name(todo.pop())
        if key in found:
            continue
        try:
            found[key] = distribution(key)
        except PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        for text in found[key].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def link_site(dists: dict[str, Distribution], site: Path) -> int:
    """Symlink each distribution's top-level files and its metadata into ``site``; return their bytes."""
    site.mkdir()
    size = 0
    for key, dist in dists.items():
        root = Path(dist.locate_file(""))
        for record in dist.files or []:
            path = Path(dist.locate_file(record))
            if ".." in record.parts or not path.exists():
                continue  # console scripts in bin/
            size += path.stat().st_size
            top = site / record.parts[0]
            if key != "granite-rt" and not top.exists():
                top.symlink_to(root / record.parts[0])
    return size


@pytest.fixture(scope="module")
def base_site(tmp_path_factory) -> tuple[Path, dict[str, Distribution], int]:
    dists = base_closure()
    site = tmp_path_factory.mktemp("base-install") / "site-packages"
    return site, dists, link_site(dists, site)


def run_in_base_install(site: Path, code: str) -> dict:
    prelude = f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]\n"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_base_install_holds_onnxruntime_and_neither_openvino_nor_torch(base_site):
    site, dists, size = base_site
    assert {"granite-rt", "numpy", "tokenizers", "huggingface-hub", "onnxruntime"} <= set(dists)
    assert not {"openvino", "torch", "transformers"} & set(dists)
    result = run_in_base_install(site, """
import importlib.util, json
from importlib.metadata import PackageNotFoundError, version
def installed(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
print(json.dumps({m: importlib.util.find_spec(m) is not None for m in ("onnxruntime", "openvino", "torch")}
                 | {"openvino_dist": installed("openvino")}))
""")
    assert result == {"onnxruntime": True, "openvino": False, "torch": False, "openvino_dist": None}
    print(f"\nbase install: {len(dists)} distributions, {size / 1e6:.0f} MB")


def test_the_base_install_runs_int8_and_fp32_on_onnxruntime(base_site, exported_tiny_embedder):
    site, _, _ = base_site
    result = run_in_base_install(site, f"""
import json
from granite_rt import Embedder
from granite_rt.devices import probe
out = {{"openvino": probe().engine("openvino").version}}
for dtype in ("int8", "fp32", "auto"):
    model = Embedder({str(exported_tiny_embedder)!r}, dtype=dtype)
    out[dtype] = {{"backend": model.info["backend"], "file": model.info["file"],
                  "vectors": model.encode({TEXTS!r}).tolist()}}
print(json.dumps(out))
""")
    assert result["openvino"] is None
    assert result["int8"]["file"] == result["auto"]["file"] == "onnx/model_qint8.onnx"
    assert result["fp32"]["file"] == "onnx/model.onnx"
    for dtype in ("int8", "fp32"):
        assert result[dtype]["backend"] == "onnx"
        expected = Embedder(exported_tiny_embedder, backend="onnx", dtype=dtype).encode(TEXTS)
        np.testing.assert_allclose(np.array(result[dtype]["vectors"]), expected, atol=1e-6)
