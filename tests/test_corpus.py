"""embed-corpus (granite_rt.corpus): every input format, ids, exactly-once resume after kill -9, bad input.

Vectors are compared with the in-process Embedder on the same texts: real all-MiniLM-L6-v2 on 200
Cranfield abstracts for equality, the tiny random embedder where only the job's bookkeeping is
checked. A shard is embedded as one ``encode`` call on its rows, so the in-process reference of a
shard is bit-for-bit; the whole list in one call differs only by float rounding of other batch shapes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from granite_rt.corpus import (MANIFEST, Columns, CorpusError, Progress, VectorOptions, embed_corpus,  # noqa: E402
                               read_vectors)

CRANFIELD = SHARED_DATA / "cranfield"
GRANITE_RT = shutil.which("granite-rt", path=str(Path(sys.executable).parent)) or shutil.which("granite-rt")


def cranfield_docs(n: int = 200) -> tuple[list[str], list[str]]:
    """The first n Cranfield abstracts with text: (ids, texts)."""
    if not CRANFIELD.is_dir():
        pytest.skip("shared Cranfield data not present")
    from granite_rt.eval.collections import load_cranfield

    collection = load_cranfield(CRANFIELD)
    pairs = [(i, t) for i, t in zip(collection.doc_ids, collection.docs) if t.strip()][:n]
    return [i for i, _ in pairs], [t for _, t in pairs]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def vectors_of(out: Path) -> tuple[list, np.ndarray, np.ndarray]:
    table = read_vectors(out)
    first = table.column_names[0]
    return (table.column(first).to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
            table.column("truncated").to_numpy(zero_copy_only=False))


def bulk_embedder(folder: Path):
    """The Embedder as the job loads it (onnx fp32, throughput workload)."""
    from granite_rt import Embedder

    return Embedder(folder, backend="onnx", dtype="fp32", workload="throughput")


def encode(embedder, texts: list[str], **options) -> np.ndarray:
    """``encode`` as the job calls it: truncation reported as a mask, not a warning."""
    return embedder.encode(texts, return_truncation=True, **options)[0]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if GRANITE_RT is None:
        pytest.skip("the granite-rt entry point is not installed")
    return subprocess.run([GRANITE_RT, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def minilm(minilm_folders) -> Path:
    return minilm_folders["export"]


@pytest.fixture(scope="module")
def tiny(tiny_embedder_folders) -> Path:
    return tiny_embedder_folders["export"]


@pytest.fixture(scope="module")
def abstracts() -> tuple[list[str], list[str]]:
    return cranfield_docs(200)


def test_local_job_equals_the_in_process_embedder(minilm, abstracts, tmp_path):
    ids, texts = abstracts
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": i, "text": t} for i, t in zip(ids, texts)])
    result = embed_corpus(source, tmp_path / "out", minilm, backend="onnx", dtype="fp32", rows_per_shard=64)
    assert (result.rows, result.shards, result.embedded_rows, result.adopted_shards) == (200, 4, 200, 0)
    got_ids, got, truncated = vectors_of(tmp_path / "out")
    assert got_ids == ids                                       # ids and their order kept
    embedder = bulk_embedder(minilm)
    whole, whole_truncated = embedder.encode(texts, return_truncation=True)
    assert got.dtype == np.float32 and got.shape == (200, 384)
    np.testing.assert_allclose(got, whole, atol=2e-6)
    assert np.array_equal(truncated, whole_truncated) and truncated.any()
    for start in range(0, 200, 64):                             # each shard is one encode call: bit-for-bit
        assert np.array_equal(got[start:start + 64], encode(embedder, texts[start:start + 64]))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["rows"] == 200 and manifest["truncated"] == int(truncated.sum())
    model = manifest["job"]["model"]
    assert (model["artifact"], model["backend"], model["dtype"], model["dim"]) == ("onnx/model.onnx", "onnx", "fp32", 384)
    from granite_rt.model_folder import sha256_file

    assert model["sha256"]["onnx/model.onnx"] == sha256_file(minilm / "onnx" / "model.onnx")
    assert model["sha256"]["tokenizer.json"] == sha256_file(minilm / "tokenizer.json")
    # Parquet readers see exactly the shards: the manifest's "_" name is skipped.
    assert pq.read_table(tmp_path / "out").num_rows == 200


def test_every_input_format_folder_and_glob_gives_the_same_vectors(tiny, tmp_path):
    ids, texts = cranfield_docs(40)
    records = [{"id": i, "text": t} for i, t in zip(ids, texts)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", records[:15])
    write_csv(inputs / "b.csv", records[15:25])
    pq.write_table(pa.table({"id": ids[25:], "text": texts[25:]}), inputs / "c.parquet", row_group_size=4)
    (tmp_path / "d.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    reference = bulk_embedder(tiny)
    runs = {"folder": inputs, "glob": str(inputs / "*"), "txt": tmp_path / "d.txt"}
    for name, source in runs.items():
        embed_corpus(source, tmp_path / name, tiny, backend="onnx", dtype="fp32", rows_per_shard=7)
        got_ids, got, _ = vectors_of(tmp_path / name)
        assert got_ids == (list(range(40)) if name == "txt" else ids), name   # .txt: ids are row numbers
        for start in range(0, 40, 7):
            assert np.array_equal(got[start:start + 7], encode(reference, texts[start:start + 7])), (name, start)


def test_id_and_title_columns_and_output_options(tiny, tmp_path):
    warnings.simplefilter("ignore", UserWarning)   # truncate_dim=16: the tiny model declares no Matryoshka dims
    records = [{"doc": 10 * i, "body": f"text number {i}", "heading": None if i % 3 == 0 else f"title {i}"}
               for i in range(12)]
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    embed_corpus(source, tmp_path / "out", tiny, columns=Columns(text="body", id="doc", title="heading"),
                 vectors=VectorOptions(precision="float16", truncate_dim=16), backend="onnx", dtype="fp32",
                 rows_per_shard=5)
    table = read_vectors(tmp_path / "out")
    assert table.column_names == ["doc", "embedding", "truncated"]
    assert table.schema.field("doc").type == pa.int64() and table.column("doc").to_pylist() == [10 * i for i in range(12)]
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), 16)
    joined = [" ".join(x for x in (r["heading"] or "", r["body"]) if x) for r in records]
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    reference = bulk_embedder(tiny)
    for start in range(0, 12, 5):
        expected = encode(reference, joined[start:start + 5], truncate_dim=16, precision="float16")
        assert np.array_equal(got[start:start + 5], expected)


def test_kill_9_half_way_then_resume_gives_every_row_exactly_once(tiny, tmp_path):
    ids, texts = cranfield_docs(200)
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": i, "text": t} for i, t in zip(ids, texts)])
    out = tmp_path / "out"
    args = ["embed-corpus", str(tiny), str(source), "--out", str(out), "--rows-per-shard", "5",
            "--backend", "onnx", "--dtype", "fp32", "--threads", "1"]
    process = subprocess.Popen([GRANITE_RT or pytest.skip("no granite-rt entry point"), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(out.glob("part-*.parquet"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the job ended before it could be killed half-way"
    committed = sorted(out.glob("part-*.parquet"))
    assert 3 <= len(committed) < 40
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    # What a reader sees of the killed job is complete shards only, and a half-written one stays hidden.
    (out / ".part-00039.parquet.tmp").write_bytes(b"PAR1 half a shard")
    assert pq.read_table(out).num_rows == 5 * len(committed)
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(committed)} kept from an earlier run" in resumed.stderr
    assert not (out / ".part-00039.parquet.tmp").exists()
    got_ids, got, _ = vectors_of(out)
    assert got_ids == ids                                        # each row once, in input order
    reference = bulk_embedder(tiny)
    for start in range(0, 200, 5):
        assert np.array_equal(got[start:start + 5], encode(reference, texts[start:start + 5])), start
    assert json.loads((out / MANIFEST).read_text())["complete"]


def test_resume_with_other_options_or_model_is_refused_naming_what_differs(tiny, minilm, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document {i}"} for i in range(6)])
    out = tmp_path / "out"
    base = ["embed-corpus", str(tiny), str(source), "--out", str(out), "--backend", "onnx", "--dtype", "fp32"]
    assert cli(*base).returncode == 0
    before = sorted(p.name for p in out.iterdir())
    changed = cli(*base, "--precision", "float16", "--truncate-dim", "8")
    assert changed.returncode == 1 and len(changed.stderr.strip().splitlines()) == 1
    assert "options.precision: float32 -> float16" in changed.stderr
    assert "options.truncate_dim: 64 -> 8" in changed.stderr
    other_model = cli("embed-corpus", str(minilm), *base[2:])
    assert other_model.returncode == 1 and "model.sha256.onnx/model.onnx" in other_model.stderr
    assert "model.dim: 64 -> 384" in other_model.stderr
    assert sorted(p.name for p in out.iterdir()) == before       # nothing touched
    again = cli(*base)
    assert again.returncode == 0 and "1 kept from an earlier run" in again.stderr


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (arguments after MODEL, what the one-line error must say)."""
    write_jsonl(tmp / "notext.jsonl", [{"text": "fine"}, {"body": "no text field"}])
    write_jsonl(tmp / "number.jsonl", [{"text": "fine"}, {"text": "also fine"}, {"text": 42}])
    write_jsonl(tmp / "mixed-ids.jsonl", [{"id": 1, "text": "a"}, {"id": "two", "text": "b"}])
    (tmp / "blank.txt").write_text("first\n\nthird\n", encoding="utf-8")
    (tmp / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp / "null.parquet")
    pq.write_table(pa.table({"body": ["a"]}), tmp / "nocolumn.parquet")
    (tmp / "garbage.parquet").write_bytes(b"not parquet at all")
    write_csv(tmp / "nocolumn.csv", [{"body": "a"}])
    (tmp / "full").mkdir()
    (tmp / "full" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp / "afile").write_text("x", encoding="utf-8")
    ok = str(write_jsonl(tmp / "ok.jsonl", [{"text": "fine"}]))
    out = str(tmp / "out")
    return {
        "missing column (jsonl)": ([str(tmp / "notext.jsonl"), "--out", out], "notext.jsonl line 2 has no field 'text'"),
        "non-string text": ([str(tmp / "number.jsonl"), "--out", out], "number.jsonl line 3: text 'text' is int"),
        "empty text": ([str(tmp / "blank.txt"), "--out", out], "blank.txt line 2: text 'text' is empty"),
        "null text": ([str(tmp / "null.parquet"), "--out", out], "null.parquet row 2: text 'text' is null"),
        "missing column (parquet)": ([str(tmp / "nocolumn.parquet"), "--out", out], "has no column 'text' (columns: body)"),
        "missing column (csv)": ([str(tmp / "nocolumn.csv"), "--out", out], "has no column 'text' (columns: body)"),
        "missing id column": ([ok, "--out", out, "--id-column", "key"], "ok.jsonl line 1: id 'key' is missing"),
        "ids of two types": ([str(tmp / "mixed-ids.jsonl"), "--out", out], "line 2: id 'id' is str but earlier ids are int"),
        "not UTF-8": ([str(tmp / "latin1.txt"), "--out", out], "latin1.txt line 1 is not UTF-8"),
        "not JSON": ([str(tmp / "broken.jsonl"), "--out", out], "broken.jsonl line 2 is not JSON"),
        "unreadable parquet": ([str(tmp / "garbage.parquet"), "--out", out], "garbage.parquet is not a readable Parquet file"),
        "no such input": ([str(tmp / "absent.jsonl"), "--out", out], "absent.jsonl does not exist"),
        "glob without match": ([str(tmp / "*.tsv"), "--out", out], "no files match"),
        "unknown format": ([str(tmp / "afile"), "--out", out], "its format is not one of"),
        "output holds other files": ([ok, "--out", str(tmp / "full")], "holds other files (notes.txt)"),
        "output is a file": ([ok, "--out", str(tmp / "afile")], "is a file"),
        "output inside the input": ([str(tmp / "full"), "--out", str(tmp / "full" / "vectors")],
                                    "is inside the input folder"),
    }


def test_every_bad_input_is_one_line_naming_the_problem_and_writes_nothing(tiny, tmp_path):
    cases = _bad_inputs(tmp_path)
    for name, (args, message) in cases.items():
        result = cli("embed-corpus", str(tiny), *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("granite-rt embed-corpus: error: ") and message in lines[0], (name, lines[0])
        assert not (tmp_path / "out").exists(), name               # nothing written, nothing that looks complete
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_an_input_error_after_some_shards_leaves_the_job_incomplete(tiny, tmp_path):
    """A row that fails while shards are read (the input changed after planning) is not a complete job."""
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document {i}"} for i in range(30)])
    seen = []

    def shrink_input(index, done, total):
        seen.append(index)
        if index == 0:
            write_jsonl(source, [{"text": f"document {i}"} for i in range(12)])
    with pytest.raises(CorpusError, match="input ended after 12 rows, 20 were planned"):
        embed_corpus(source, tmp_path / "out", tiny, backend="onnx", dtype="fp32", rows_per_shard=10,
                     on_shard=shrink_input)
    assert seen == [0]
    assert not json.loads((tmp_path / "out" / MANIFEST).read_text())["complete"]
    # The shrunken input is a different input: the resume names it.
    with pytest.raises(CorpusError, match=r"input\..*docs.jsonl\.size"):
        embed_corpus(source, tmp_path / "out", tiny, backend="onnx", dtype="fp32", rows_per_shard=10)


def test_int8_without_calibration_ranges_is_refused(tiny, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}])
    with pytest.raises(CorpusError, match="precision int8 needs calibration ranges"):
        embed_corpus(source, tmp_path / "out", tiny, vectors=VectorOptions(precision="int8"))
    assert not (tmp_path / "out").exists()


def test_progress_line_has_rate_and_eta_and_stays_off_without_a_terminal(tiny, tmp_path):
    import io

    stream = io.StringIO()
    bar = Progress(total=100, done=20, stream=stream)
    bar.drawn -= 1
    bar.advance(30)
    assert "50/100 rows  50.0%" in stream.getvalue() and "rows/s ETA" in stream.getvalue()
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document {i}"} for i in range(5)])
    result = cli("embed-corpus", str(tiny), str(source), "--out", str(tmp_path / "out"), "--rows-per-shard", "2")
    assert result.returncode == 0 and "rows/s" not in result.stderr       # stderr is a pipe here
    assert "5 rows in 3 shards (5 embedded now)" in result.stderr


def test_import_granite_rt_loads_neither_ray_nor_pyarrow():
    code = ("import sys, granite_rt, granite_rt.corpus, granite_rt.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'pyarrow'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
