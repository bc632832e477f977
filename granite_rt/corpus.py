"""Corpus embedding: files of texts → Parquet shards of vectors, streamed, resumable, each row exactly once.

INPUT is a ``.jsonl``, ``.parquet``, ``.csv`` or ``.txt`` file (one text per line), a folder of them or
a glob. One pass over it plans the job: every row is checked (the text a non-empty string, ids of one
type) and the place where each shard of ``rows_per_shard`` rows starts is recorded (a byte offset, or a
row of a Parquet file), so a shard can be read again on its own, by a resumed run or by a Ray read
task, without rereading what comes before it. Each shard is embedded with ``Embedder.encode`` (its
rows are the window within which texts are length-sorted into batches) and committed by writing a
hidden temporary file, fsyncing it and renaming it to ``part-NNNNN.parquet``: a shard file is complete
or does not exist. Its Parquet metadata names the job and the rows it holds.

``_manifest.json`` holds the job's fingerprint (sha256 of the model files, artifact, device, dtype,
options, input files), the plan, and once every shard is committed the counts and ``"complete": true``.
Run again with the same arguments, the job adopts every committed shard and embeds only the others;
with a different model, options or input it refuses, naming what differs. Parquet readers (pyarrow,
pandas, DuckDB, Spark) skip names starting with ``_`` or ``.``, so reading the folder as a dataset
gives the committed shards only. Memory is bounded by a shard's texts, tokens and vectors (the
readers stream), whatever the size of the input.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from granite_rt.arguments import is_int, json_object
from granite_rt.embedder import Embedder
from granite_rt.errors import CorpusError
from granite_rt.model_folder import META_FILES, sha256_file
from granite_rt.output import check_precision

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv", ".txt": "txt"}
MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "granite-rt embed-corpus"
SHARD_METADATA = b"granite_rt.shard"
VECTOR_COLUMN = "embedding"
TRUNCATED_COLUMN = "truncated"
# Rows per shard: the unit of commit and resume, and the window of length-sorted batching. 4096
# Cranfield-sized abstracts (~200 tokens) hold ~100 MB of tokenizer encodings while they are embedded.
ROWS_PER_SHARD = 4096
_MISSING = object()


@dataclass(frozen=True)
class Columns:
    """Which input columns (jsonl keys, csv header names, Parquet columns) hold the text, id and title."""

    text: str = "text"
    id: str | None = None       # None: "id" when the first input file has one, else the 0-based row number
    title: str | None = None    # joined as the reference embeds documents: "title text"


@dataclass(frozen=True)
class VectorOptions:
    """What the vectors depend on besides the model (all in the job's fingerprint but ``batch_size``)."""

    precision: str = "float32"
    truncate_dim: int | None = None
    normalize: bool = True
    batch_size: int = 32
    ranges: np.ndarray | None = field(default=None, compare=False)   # int8/uint8 calibration, (2, dim)

    def check(self) -> None:
        check_precision(self.precision)
        if self.precision in ("int8", "uint8") and self.ranges is None:
            raise CorpusError(f"precision {self.precision} needs calibration ranges (granite_rt.output."
                              "calibration_ranges of representative float32 embeddings): ranges computed per "
                              "batch would put the rows of different shards in different buckets")

    def fingerprint(self, dim: int) -> dict[str, Any]:
        ranges = None if self.ranges is None else hashlib.sha256(
            np.ascontiguousarray(self.ranges, dtype=np.float32).tobytes()).hexdigest()
        return {"precision": self.precision, "truncate_dim": dim, "normalize": self.normalize, "ranges_sha256": ranges}


@dataclass(frozen=True)
class Shard:
    """Rows [start, start + rows) of the corpus; the first is at ``offset`` of input file number ``file``
    (a byte offset in text formats, a row in Parquet), on line ``line`` of it (for messages)."""

    index: int
    start: int
    rows: int
    file: int
    offset: int
    line: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class Plan:
    """The corpus as the job sees it: row count, id column and type, and where each shard starts."""

    rows: int
    id_column: str | None        # None: ids are row numbers
    id_type: str                 # "int64" | "string"
    shards: tuple[Shard, ...]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "id_column": self.id_column, "id_type": self.id_type,
                "shards": [[s.start, s.rows, s.file, s.offset, s.line] for s in self.shards]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        shards = tuple(Shard(i, *entry) for i, entry in enumerate(data["shards"]))
        return cls(int(data["rows"]), data["id_column"], data["id_type"], shards)


# -------------------------------------------------------------------------------------------- input

def input_files(spec: str | os.PathLike) -> list[Path]:
    """The files of INPUT: the file itself, a folder's supported files (recursively, in path order,
    names starting with '.' or '_' skipped as Parquet readers skip them), or a glob's matches."""
    text = os.fspath(spec)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise CorpusError(f"no files match {text}")
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                       and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        if not files:
            raise CorpusError(f"folder {path} holds no {'/'.join(sorted(set(FORMATS)))} files")
    elif path.is_file():
        files = [path]
    else:
        raise CorpusError(f"input {text} does not exist")
    for f in files:
        if f.suffix.lower() not in FORMATS:
            raise CorpusError(f"cannot read {f}: its format is not one of {', '.join(sorted(FORMATS))} "
                              "(named by the file's suffix)")
    return files


class Corpus:
    """Rows (id, text) of input files read by their format, checked, from any planned position."""

    def __init__(self, files: Sequence[Path], columns: Columns = Columns()) -> None:
        self.files = [Path(f) for f in files]
        self.columns = columns
        self.formats = [FORMATS[f.suffix.lower()] for f in self.files]
        if "txt" in self.formats and (columns.id is not None or columns.title is not None):
            which = "--id-column" if columns.id is not None else "--title-column"
            raise CorpusError(f"{self.files[self.formats.index('txt')]} is a .txt file (one text per line, no "
                              f"columns): {which} does not apply; use .jsonl, .csv or .parquet input")
        self.id_column = columns.id if columns.id is not None else (
            "id" if "id" in self._columns_of(0) else None)

    def _columns_of(self, index: int) -> list[str]:
        """Column names of one file (a jsonl file: the keys of its first record)."""
        fmt, path = self.formats[index], self.files[index]
        if fmt == "txt":
            return []
        if fmt == "jsonl":
            return next((list(rec) for _, _, rec in _read_jsonl(path, 0, 1)), [])
        if fmt == "csv":
            return _csv_header(path)[0]
        return list(_parquet_file(path).schema_arrow.names)

    def wanted(self) -> list[str]:
        return [c for c in (self.columns.text, self.id_column, self.columns.title) if c is not None]

    def records(self, file: int = 0, offset: int = 0, line: int = 1) -> Iterator[tuple[int, int, int, str, Any]]:
        """(file, offset, line, where, (id value, text)) of every row from a position on, in input order."""
        for index in range(file, len(self.files)):
            path, fmt = self.files[index], self.formats[index]
            start, first = (offset, line) if index == file else (0, 1)
            self._check_columns(index)
            try:
                for at, number, record in _READERS[fmt](path, start, first, self.wanted()):
                    where = f"{path} {'row' if fmt == 'parquet' else 'line'} {number}"
                    yield index, at, number, where, record
            except OSError as err:
                raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None

    def _check_columns(self, index: int) -> None:
        """Parquet and csv files declare their columns: a named one that is absent fails before any row."""
        if self.formats[index] not in ("parquet", "csv"):
            return
        names = self._columns_of(index)
        for option, column in (("--text-column", self.columns.text), ("--id-column", self.id_column),
                               ("--title-column", self.columns.title)):
            if column is not None and column not in names:
                raise CorpusError(f"{self.files[index]} has no column {column!r} (columns: {', '.join(names)}); "
                                  f"name the right one with {option}")

    def row(self, record: dict[str, Any], where: str, number: int) -> tuple[Any, str]:
        """(id, text) of one record; a missing, null, non-string or empty text fails naming the row."""
        text = self._text(record, self.columns.text, where, required=True)
        if self.columns.title is not None:
            title = self._text(record, self.columns.title, where, required=False)
            text = " ".join(x for x in (title, text) if x).strip()
        if self.id_column is None:
            return number, text
        ident = record.get(self.id_column, _MISSING)
        if ident is _MISSING or ident is None:
            raise CorpusError(f"{where}: id {self.id_column!r} is {'missing' if ident is _MISSING else 'null'}")
        if isinstance(ident, bool) or not isinstance(ident, (int, str)):
            raise CorpusError(f"{where}: id {self.id_column!r} is {type(ident).__name__}, expected an int or a string")
        return ident, text

    def _text(self, record: dict[str, Any], column: str, where: str, required: bool) -> str:
        value = record.get(column, _MISSING)
        if value is _MISSING and required:
            raise CorpusError(f"{where} has no field {column!r} (fields: {', '.join(map(str, record))}); "
                              "name the text field with --text-column")
        if value is _MISSING or (value is None and not required):
            return ""
        if value is None:
            raise CorpusError(f"{where}: text {column!r} is null")
        if not isinstance(value, str):
            raise CorpusError(f"{where}: text {column!r} is {type(value).__name__}, expected a string")
        if required and not value.strip():
            raise CorpusError(f"{where}: text {column!r} is empty")
        return value

    def plan(self, rows_per_shard: int = ROWS_PER_SHARD) -> Plan:
        """One pass over every row: checked, counted, shard starts recorded, the id type fixed."""
        shards: list[Shard] = []
        id_kind: type | None = None
        rows = 0
        for file, offset, line, where, record in self.records():
            ident, _ = self.row(record, where, rows)
            if id_kind is None:
                id_kind = type(ident)
            elif type(ident) is not id_kind:
                raise CorpusError(f"{where}: id {self.id_column!r} is {type(ident).__name__} but earlier ids are "
                                  f"{id_kind.__name__}; the id column needs one type")
            if rows % rows_per_shard == 0:
                shards.append(Shard(len(shards), rows, 0, file, offset, line))
            rows += 1
        if rows == 0:
            raise CorpusError(f"no rows in {', '.join(map(str, self.files))}")
        sized = tuple(Shard(s.index, s.start, min(rows_per_shard, rows - s.start), s.file, s.offset, s.line)
                      for s in shards)
        return Plan(rows, self.id_column, "int64" if id_kind is int else "string", sized)

    def read(self, shard: Shard) -> tuple[list[Any], list[str]]:
        """ids and texts of one planned shard."""
        ids: list[Any] = []
        texts: list[str] = []
        if shard.rows == 0:
            return ids, texts
        for _, _, _, where, record in self.records(shard.file, shard.offset, shard.line):
            ident, text = self.row(record, where, shard.start + len(texts))
            ids.append(ident)
            texts.append(text)
            if len(texts) == shard.rows:
                return ids, texts
        raise CorpusError(f"the input ended after {shard.start + len(texts)} rows, {shard.start + shard.rows} were "
                          "planned: it changed while the job ran")

    def fingerprint(self) -> list[dict[str, Any]]:
        """What identifies the input: each file's path, size and modification time."""
        out = []
        for f in self.files:
            stat = f.stat()
            out.append({"path": str(f.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        return out


def _lines(path: Path, offset: int, line: int) -> Iterator[tuple[int, int, str, int]]:
    """(byte offset, line number, text without its "\n", offset of the next line) of each line of a UTF-8 file."""
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            yield offset, line, _decode(raw, path, line, offset == 0), offset + len(raw)
            offset += len(raw)
            line += 1


def _decode(raw: bytes, path: Path, line: int, first: bool) -> str:
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} line {line} is not UTF-8 ({err.reason} at byte {err.start})") from None
    return text[:-1] if text.endswith("\n") else text


def _read_txt(path: Path, offset: int, line: int, names: list[str]) -> Iterator[tuple[int, int, dict]]:
    for at, number, text, _ in _lines(path, offset, line):
        yield at, number, {"text": text[:-1] if text.endswith("\r") else text}


def _read_jsonl(path: Path, offset: int, line: int, names: list[str] | None = None) -> Iterator[tuple[int, int, dict]]:
    for at, number, text, _ in _lines(path, offset, line):
        if not text.strip():
            continue
        yield at, number, json_object(text, f"{path} line {number}", CorpusError)


def _csv_header(path: Path) -> tuple[list[str], int]:
    """The header's names and the byte offset where the first record starts."""
    with open(path, "rb") as f:
        raw = f.readline()
    if not raw.strip():
        raise CorpusError(f"{path} has no header line (a .csv file needs column names first)")
    names = next(csv.reader([_decode(raw, path, 1, True)]))
    return names, len(raw)


def _read_csv(path: Path, offset: int, line: int, names: list[str]) -> Iterator[tuple[int, int, dict]]:
    header, body = _csv_header(path)
    offset, line = (body, 2) if offset < body else (offset, line)
    position = [offset, line]

    def lines() -> Iterator[str]:
        # csv.reader pulls lines only until a record is complete, so position ends where the record ends.
        for _, number, text, after in _lines(path, offset, line):
            position[:] = [after, number + 1]
            yield text + "\n"

    start = (offset, line)
    try:
        for values in csv.reader(lines(), strict=True):
            if values:
                if len(values) != len(header):
                    raise CorpusError(f"{path} line {start[1]} has {len(values)} fields; the header has {len(header)}")
                yield start[0], start[1], dict(zip(header, values))
            start = (position[0], position[1])
    except csv.Error as err:
        raise CorpusError(f"{path} line {position[1] - 1} is not valid CSV ({err})") from None


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{path} is not a readable Parquet file ({err})") from None


def _read_parquet(path: Path, offset: int, line: int, names: list[str]) -> Iterator[tuple[int, int, dict]]:
    parquet = _parquet_file(path)
    present = [n for n in names if n in parquet.schema_arrow.names]
    group, row = 0, 0
    while group < parquet.num_row_groups and row + parquet.metadata.row_group(group).num_rows <= offset:
        row += parquet.metadata.row_group(group).num_rows
        group += 1
    for batch in parquet.iter_batches(batch_size=1024, row_groups=range(group, parquet.num_row_groups),
                                      columns=present):
        columns = {n: batch.column(n).to_pylist() for n in present}
        for i in range(batch.num_rows):
            if row >= offset:
                yield row, row + 1, {n: columns[n][i] for n in present}
            row += 1


_READERS: dict[str, Callable[..., Iterator[tuple[int, int, dict]]]] = {
    "txt": _read_txt, "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


# ------------------------------------------------------------------------------------------ vectors

def encode_arrow(embedder: Embedder, texts: list[str], options: VectorOptions) -> tuple["pa.Array", "pa.Array"]:
    """The vectors of ``texts`` as a fixed-size-list Arrow array (dtype of ``precision``) and the truncation flags."""
    import pyarrow as pa

    vectors, truncated = embedder.encode(texts, batch_size=options.batch_size, normalize=options.normalize,
                                         truncate_dim=options.truncate_dim, precision=options.precision,
                                         ranges=options.ranges, return_truncation=True)
    flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]), pa.array(truncated, type=pa.bool_())


def shard_table(plan: Plan, ids: list[Any], vectors: "pa.Array", truncated: "pa.Array") -> "pa.Table":
    import pyarrow as pa

    id_type = pa.int64() if plan.id_type == "int64" else pa.string()
    return pa.table({plan.id_column or "id": pa.array(ids, type=id_type), VECTOR_COLUMN: vectors,
                     TRUNCATED_COLUMN: truncated})


def model_fingerprint(embedder: Embedder) -> dict[str, Any]:
    """What identifies the model: artifact, backend, device, dtype and the sha256 of every file it reads."""
    info = embedder.info
    folder = Path(info["folder"])
    files = sorted(set(info["files"]) | {name for name in META_FILES if (folder / name).is_file()})
    return {"artifact": info["file"], "backend": info["backend"], "device": info["device"], "dtype": info["dtype"],
            "dim": embedder.dim, "sha256": {name: sha256_file(folder / name) for name in files}}


# ------------------------------------------------------------------------------------------- output

class ShardFolder:
    """The output folder: committed ``part-NNNNN.parquet`` shards and ``_manifest.json``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def check_usable(self) -> None:
        """A new folder, an empty one, or one this command wrote; anything else fails before work starts."""
        if self.path.exists() and not self.path.is_dir():
            raise CorpusError(f"--out {self.path} is a file; embed-corpus writes a folder of shards")
        if not self.path.is_dir() or (self.path / MANIFEST).is_file():
            return
        others = sorted(p.name for p in self.path.iterdir())
        if others:
            raise CorpusError(f"--out {self.path} holds other files ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}) and no {MANIFEST}: give a new or empty folder")

    def manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CorpusError(f"{path} cannot be read ({err}); it is not a manifest this command wrote") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise CorpusError(f"{path} is not an embed-corpus manifest: give a new or empty --out folder")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))

    def committed(self, fingerprint: str, plan: Plan) -> dict[int, dict[str, Any]]:
        """Shard index → its metadata, for every shard file of this job; stale temporary files removed.

        A file of the job's name pattern that another job wrote, or whose rows are not the planned ones,
        fails: it would be read as part of the output."""
        import pyarrow.parquet as pq

        done: dict[int, dict[str, Any]] = {}
        for path in sorted(self.path.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()
                continue
            if path.name == MANIFEST:
                continue
            meta = (pq.read_schema(path).metadata or {}).get(SHARD_METADATA) if path.suffix == ".parquet" else None
            info = json.loads(meta) if meta else None
            index = info.get("index") if info else None
            if (info is None or info.get("fingerprint") != fingerprint or not isinstance(index, int)
                    or not 0 <= index < len(plan.shards) or path.name != plan.shards[index].name
                    or info.get("rows") != [plan.shards[index].start, plan.shards[index].start + plan.shards[index].rows]):
                raise CorpusError(f"{path} is not a shard of this job: remove it, or give a new --out folder")
            done[index] = info
        return done

    def commit(self, shard: Shard, table: "pa.Table", fingerprint: str) -> dict[str, Any]:
        """Write the shard under a hidden name, fsync, rename: the shard appears complete or not at all."""
        import pyarrow.parquet as pq

        if table.num_rows != shard.rows:
            raise CorpusError(f"shard {shard.index} has {table.num_rows} rows, {shard.rows} were planned")
        info = {"fingerprint": fingerprint, "index": shard.index, "rows": [shard.start, shard.start + shard.rows],
                "truncated": int(table.column(TRUNCATED_COLUMN).to_numpy().sum())}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               SHARD_METADATA: json.dumps(info).encode()})
        temporary = self.path / f".{shard.name}.tmp"
        pq.write_table(table, temporary)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, self.path / shard.name)
        _fsync_folder(self.path)
        return info


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def differences(before: Any, now: Any, where: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two fingerprints."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) | set(now), key=str):
            out += differences(before.get(key, "(none)"), now.get(key, "(none)"), f"{where}.{key}" if where else str(key))
        return out
    if isinstance(before, list) and isinstance(now, list) and all(isinstance(x, dict) and "path" in x
                                                                   for x in before + now):
        return differences({x["path"]: x for x in before}, {x["path"]: x for x in now}, where)
    return [] if before == now else [f"{where}: {_short(before)} -> {_short(now)}"]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------------------------- job

@dataclass(frozen=True)
class ModelOptions:
    """How to load the model: as ``Embedder(model, backend, device, dtype, threads=threads)``."""

    model: str
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None

    def load(self, model_class: type = Embedder) -> Any:
        """An Embedder (or ``model_class``, e.g. Reranker) for bulk work: OpenVINO's throughput hint."""
        return model_class(self.model, backend=self.backend, device=self.device, dtype=self.dtype,
                           threads=self.threads, workload="throughput")


@dataclass
class CorpusResult:
    """What a run did: the output folder, the corpus' rows and shards, what this run embedded."""

    out: Path
    rows: int
    shards: int
    embedded_rows: int           # by this run (0 when every shard was already committed)
    adopted_shards: int          # committed by an earlier run and kept
    truncated: int               # rows cut at the model's max length
    seconds: float
    manifest: dict[str, Any] = field(repr=False)


class Progress:
    """Rows done of the total, rate and ETA on one stderr line (redrawn at most 4 times a second)."""

    def __init__(self, total: int, done: int, stream=None) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream or sys.stderr
        self.started = self.drawn = time.perf_counter()

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.drawn >= 0.25 or self.done >= self.total:
            self.drawn = now
            rate = (self.done - self.start_done) / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.stream.write(f"\rembed-corpus {self.done}/{self.total} rows {100 * self.done / self.total:5.1f}% "
                              f"{rate:7.1f} rows/s ETA {_clock(eta)}" + ("\n" if self.done >= self.total else ""))
            self.stream.flush()


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ShardEngine(Protocol):
    """What embeds the pending shards: (shard, table of id, vector, truncated) for each, in any order.

    ``embedder`` is the job's model, loaded here (its files are fingerprinted); ``model`` says how it
    was loaded, for engines that load copies elsewhere (granite_rt.ray.RayEngine)."""

    def __call__(self, corpus: Corpus, plan: Plan, shards: Sequence[Shard], embedder: Embedder,
                 model: ModelOptions, vectors: VectorOptions) -> Iterator[tuple[Shard, "pa.Table"]]: ...


def local_engine(corpus: Corpus, plan: Plan, shards: Sequence[Shard], embedder: Embedder, model: ModelOptions,
                 vectors: VectorOptions) -> Iterator[tuple[Shard, "pa.Table"]]:
    """The shards one after another in this process, each one ``encode`` call."""
    for shard in shards:
        ids, texts = corpus.read(shard)
        yield shard, shard_table(plan, ids, *encode_arrow(embedder, texts, vectors))


def embed_corpus(input: str | os.PathLike, out: str | os.PathLike, model: str | os.PathLike, *,
                 columns: Columns = Columns(), vectors: VectorOptions = VectorOptions(),
                 backend: str = "auto", device: str = "auto", dtype: str = "auto", threads: int | None = None,
                 rows_per_shard: int = ROWS_PER_SHARD, engine: ShardEngine = local_engine, progress: bool = False,
                 on_shard: Callable[[int, int, int], None] | None = None) -> CorpusResult:
    """Embed every row of INPUT into Parquet shards under OUT; run again after a crash to finish the job.

    ``engine``: ``local_engine`` (here, ``threads`` threads) or ``granite_rt.ray.RayEngine(address,
    actors)`` (Ray Data actors of ``threads`` CPUs each). Both write the same shards, so a job started
    with one can be finished with the other. ``on_shard(index, rows_done, rows_total)`` is called after
    each shard this run commits.
    """
    started = time.perf_counter()
    if not is_int(rows_per_shard) or rows_per_shard < 1:
        raise CorpusError(f"rows_per_shard must be a positive int, got {rows_per_shard!r}")
    vectors.check()
    folder = ShardFolder(out)
    folder.check_usable()
    corpus = Corpus(input_files(input), columns)
    if Path(input).is_dir() and Path(input).resolve() in (folder.path.resolve(), *folder.path.resolve().parents):
        raise CorpusError(f"--out {folder.path} is inside the input folder {input}: its shards would be read as input")
    manifest = folder.manifest()
    # A new job checks every input row before the model loads; a resumed one reuses its plan.
    plan = corpus.plan(rows_per_shard) if manifest is None else None
    options = ModelOptions(os.fspath(model), backend, device, dtype, threads)
    embedder = options.load()
    job = {"model": model_fingerprint(embedder),
           "options": {"text_column": columns.text, "id_column": corpus.id_column, "title_column": columns.title,
                       "rows_per_shard": rows_per_shard,
                       **vectors.fingerprint(vectors.truncate_dim or embedder.dim)},
           "input": corpus.fingerprint()}
    fingerprint = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    if manifest is not None:
        changed = differences(manifest.get("job", {}), job)
        if changed:
            raise CorpusError(f"--out {folder.path} holds the output of a different job; resuming would mix vectors. "
                              f"What differs: {'; '.join(changed)}. Give the original arguments or a new --out folder")
        plan = Plan.from_json(manifest["plan"])
    else:
        manifest = {"format": MANIFEST_FORMAT, "version": 1, "model": os.fspath(model), "job": job,
                    "fingerprint": fingerprint, "plan": plan.to_json(), "complete": False}
        folder.write_manifest(manifest)
    done = folder.committed(fingerprint, plan)
    pending = [s for s in plan.shards if s.index not in done]
    rows_done = sum(s.rows for s in plan.shards if s.index in done)
    bar = Progress(plan.rows, rows_done) if progress and pending else None
    embedded = 0

    def commit(shard: Shard, table: "pa.Table") -> None:
        nonlocal rows_done, embedded
        done[shard.index] = folder.commit(shard, table, fingerprint)
        rows_done += shard.rows
        embedded += shard.rows
        if bar is not None:
            bar.advance(shard.rows)
        if on_shard is not None:
            on_shard(shard.index, rows_done, plan.rows)

    if pending:
        for shard, table in engine(corpus, plan, pending, embedder, options, vectors):
            commit(shard, table)
    truncated = sum(int(info.get("truncated", 0)) for info in done.values())
    manifest.update({"complete": True, "rows": plan.rows, "shards": len(plan.shards), "truncated": truncated,
                     "id_column": plan.id_column or "id", "vector_column": VECTOR_COLUMN,
                     "vector_type": vectors.precision, "dim": job["options"]["truncate_dim"],
                     "truncated_column": TRUNCATED_COLUMN,
                     "files": [{"file": s.name, "rows": [s.start, s.start + s.rows]} for s in plan.shards]})
    folder.write_manifest(manifest)
    return CorpusResult(folder.path, plan.rows, len(plan.shards), embedded, len(plan.shards) - len(pending),
                        truncated, time.perf_counter() - started, manifest)


def read_vectors(out: str | os.PathLike) -> "pa.Table":
    """The committed shards of an output folder as one table (every shard, in row order)."""
    import pyarrow.parquet as pq
    import pyarrow as pa

    folder = Path(out)
    shards = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in shards]) if shards else pa.table({})


__all__ = ["Columns", "Corpus", "CorpusResult", "ModelOptions", "Plan", "Shard", "ShardEngine", "ShardFolder",
           "VectorOptions", "embed_corpus", "encode_arrow", "input_files", "local_engine", "read_vectors"]
