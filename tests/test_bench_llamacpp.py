"""llama.cpp as a benchmark contender: listed, reported "not available" when its venv cannot be made, and —
where bench/.venv-llamacpp exists (created by `python -m bench`; CI does not build it) — its GGUF
conversion of the tiny checkpoint computes the vectors sentence-transformers on torch computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.env import ENVS

LLAMACPP_PYTHON = ENVS["llamacpp"].python
ROOT = Path(__file__).resolve().parents[1]


def _llamacpp_env_ready() -> bool:
    return LLAMACPP_PYTHON.exists() and subprocess.run(
        [str(LLAMACPP_PYTHON), "-c", "import llama_cpp, gguf"], capture_output=True).returncode == 0


needs_llamacpp = pytest.mark.skipif(not _llamacpp_env_ready(), reason="bench/.venv-llamacpp not built (python -m bench makes it)")


def _in_llamacpp_env(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (which prints one JSON line last) in the llamacpp venv, GGUFs cached under tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_GGUF_CACHE": str(tmp_path / "gguf")}
    proc = subprocess.run([str(LLAMACPP_PYTHON), "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_llamacpp_contenders_are_embedders_in_their_own_environment():
    from bench.contenders import by_name

    for name, gguf_type in (("llama.cpp GGUF F16", "f16"), ("llama.cpp GGUF Q8_0", "q8_0")):
        contender = by_name(name)
        assert (contender.family, contender.env, contender.kinds) == ("llama.cpp", "llamacpp", ("embedder",))
        assert contender.options["type"] == gguf_type
    requirements = ENVS["llamacpp"].requirements.read_text()
    assert "llama-cpp-python==" in requirements and "gguf==" in requirements


def test_a_venv_that_cannot_be_installed_makes_its_contenders_not_available(monkeypatch, tmp_path):
    from bench import run
    from bench.contenders import by_name
    from bench.workloads import Workload

    def ensure_env(name):
        if name == "llamacpp":
            raise subprocess.CalledProcessError(1, ["pip", "install", "llama-cpp-python==0.3.36"])
        return Path(sys.executable)

    monkeypatch.setattr(run, "ensure_env", ensure_env)
    pythons, unavailable = run.ensure_pythons([by_name("llama.cpp GGUF F16"), by_name("ST openvino")])
    assert "llamacpp" not in pythons and pythons["bench"] == sys.executable
    assert unavailable["llamacpp"].startswith("not available: the llamacpp environment could not be installed")
    assert "llama-cpp-python==0.3.36" in unavailable["llamacpp"]

    workload = Workload("c_query", "(c)", "embedder", {"texts": ["a query"]}, 1, "ms", rounds=1)
    results = run.run_kind("embedder", [workload], model=None, sizes=None, pythons=pythons, log_dir=tmp_path,
                           only={"llama.cpp GGUF F16", "llama.cpp GGUF Q8_0"}, unavailable=unavailable)
    assert results["c_query"]["failed"] == {"llama.cpp GGUF F16": unavailable["llamacpp"],
                                            "llama.cpp GGUF Q8_0": unavailable["llamacpp"]}
    assert results["c_query"]["seconds"] == {}


@needs_llamacpp
def test_gguf_tensor_names_cover_the_checkpoint_and_reject_unknown_tensors(tiny_embedder_checkpoint, tmp_path):
    code = f"""
import json
from safetensors import safe_open
from bench.gguf_convert import tensor_names
names = list(safe_open({str(tiny_embedder_checkpoint / "model.safetensors")!r}, "np").keys())
mapped = tensor_names(names, 4)
try:
    tensor_names(names + ["adapter.weight"], 4)
    rejected = None
except ValueError as exc:
    rejected = str(exc)
print(json.dumps({{"mapped": mapped, "rejected": rejected}}))
"""
    out = _in_llamacpp_env(code, tmp_path)
    mapped = out["mapped"]
    assert mapped["embeddings.tok_embeddings.weight"] == "token_embd.weight"
    assert mapped["embeddings.norm.weight"] == "token_embd_norm.weight"
    assert mapped["final_norm.weight"] == "output_norm.weight"
    assert mapped["layers.3.attn.Wqkv.weight"] == "blk.3.attn_qkv.weight"
    assert mapped["layers.3.attn.Wo.weight"] == "blk.3.attn_output.weight"
    assert mapped["layers.3.mlp.Wi.weight"] == "blk.3.ffn_up.weight"
    assert mapped["layers.3.mlp.Wo.weight"] == "blk.3.ffn_down.weight"
    assert mapped["layers.3.mlp_norm.weight"] == "blk.3.ffn_norm.weight"
    assert mapped["layers.3.attn_norm.weight"] == "blk.3.attn_norm.weight"
    assert "layers.0.attn_norm.weight" not in mapped  # layer 0's attention norm is the identity in ModernBERT
    assert len(mapped) == 3 + 4 * 6 - 1  # every checkpoint tensor has a GGUF name
    assert "adapter.weight" in out["rejected"]


@pytest.fixture(scope="module")
def distinct_tiny_embedder(tmp_path_factory) -> dict[str, Path]:
    """The tiny embedder shape with weights 15× the fixtures' spread (initializer_range 0.3), exported to ONNX.

    At the fixtures' 0.02 the layers barely move the residual stream: every text gets nearly the same
    vector (pairwise cosine 0.99998), so a wrong FFN activation would still match torch to 0.99999.
    """
    from granite_export import export_model
    from granite_export.random_models import TINY_EMBEDDER, build_checkpoint

    from tests.conftest import sample_texts

    root = tmp_path_factory.mktemp("llamacpp")
    checkpoint = build_checkpoint(root / "checkpoint", TINY_EMBEDDER, texts=sample_texts(), max_seq_length=128,
                                  initializer_range=0.3)
    export_model(checkpoint, root / "export", formats=("onnx",), log=lambda _: None)
    return {"checkpoint": checkpoint, "export": root / "export"}


@needs_llamacpp
def test_llamacpp_contender_computes_the_torch_vectors(distinct_tiny_embedder, tmp_path):
    """F16 and Q8_0 GGUFs through the bench's adapter against sentence-transformers on torch: cosine per text.

    The texts run past the tiny model's 16-token sliding window, so both attention kinds and both RoPE bases
    count. Measured: F16 0.99996, Q8_0 0.984 (int8 steps on these wide weights); the FFN activation written as
    gelu instead of the checkpoint's silu (as a converter without the hidden_activation key does) drops F16 to 0.943.
    """
    from sentence_transformers import SentenceTransformer

    from tests.conftest import sample_texts

    checkpoint = distinct_tiny_embedder["checkpoint"]
    texts = sample_texts(3)[:12] + [" ".join(sample_texts(3)[-6:])]
    reference = SentenceTransformer(str(checkpoint), device="cpu").encode(texts, normalize_embeddings=True)
    between_texts = (reference @ reference.T)[np.triu_indices(len(texts), 1)]
    assert between_texts.mean() < 0.5  # the texts' vectors differ: matching them is a real check
    code = f"""
import json
from pathlib import Path
import numpy as np
from bench import adapters
from bench.contenders import by_name
texts = {texts!r}
out = {{}}
for name in ("llama.cpp GGUF F16", "llama.cpp GGUF Q8_0"):
    embed = adapters.load(by_name(name), "embedder", Path({str(checkpoint)!r}),
                          Path({str(distinct_tiny_embedder["export"])!r}))
    out[name] = np.asarray(embed(texts)).tolist()
print(json.dumps(out))
"""
    out = _in_llamacpp_env(code, tmp_path)
    assert sorted(p.name for p in (tmp_path / "gguf").rglob("*.gguf")) == ["model-f16.gguf", "model-q8_0.gguf"]
    for name, floor in (("llama.cpp GGUF F16", 0.999), ("llama.cpp GGUF Q8_0", 0.97)):
        vectors = np.asarray(out[name])
        assert vectors.shape == reference.shape
        cosines = np.sum(vectors * reference, axis=1)
        assert cosines.min() > floor, (name, cosines)


def test_f16_efficiency_is_counted_against_the_fp32_peak():
    from bench.report import efficiency

    zen4 = {"flags": {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "avx_vnni": False},
            "mhz": 2500.0, "physical_cores": 2, "vendor": "AuthenticAMD"}
    config = {"num_hidden_layers": 12, "hidden_size": 384, "intermediate_size": 1536, "local_attention": 128,
              "global_attn_every_n_layers": 3}
    workload = {"kind": "embedder", "tokens": {"per_doc": 512}, "lengths": [512] * 8, "items": 8, "precision": {"llama.cpp GGUF F16": "fp16", "llama.cpp GGUF Q8_0": "int8"},
                "seconds": {"llama.cpp GGUF F16": {"median": 4.0}, "llama.cpp GGUF Q8_0": {"median": 4.0}}}
    eff = efficiency({"workloads": {"a_docs512": workload}}, {"embedder": config}, zen4)
    counted = eff["workloads"]["a_docs512"]["contenders"]
    f16, q8 = counted["llama.cpp GGUF F16"], counted["llama.cpp GGUF Q8_0"]
    assert (f16["peak"], q8["peak"]) == ("fp32", "int8")
    assert f16["fraction_of_peak"] == pytest.approx(f16["gops"] / eff["peaks_gops"]["fp32"])
    assert q8["fraction_of_peak"] == pytest.approx(q8["gops"] / eff["peaks_gops"]["int8"])
