"""Retrieval collections: Cranfield (SMART files) and BEIR-style folders, and deterministic subsampling.

Relevance is kept as graded gains (0 = judged not relevant); a document counts as relevant
when its gain is > 0, as in trec_eval / pytrec_eval, which BEIR uses.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from granite_rt.arguments import json_object
from granite_rt.errors import CollectionError

# Cleverdon's relevance codes in cranqrel: 1 = complete answer ... 4 = minimum interest,
# -1 (and 5, never present) = of no interest. Graded gain = 5 - code, so the best code gets the
# highest gain (1 → 4, 2 → 3, 3 → 2, 4 → 1) and "no interest" gets 0 (judged, not relevant).
CRANFIELD_GAINS = {1: 4, 2: 3, 3: 2, 4: 1, 5: 0, -1: 0}
CRANFIELD_FILES = ("cran.all.1400", "cran.qry", "cranqrel")
BEIR_FILES = ("corpus.jsonl", "queries.jsonl")


@dataclass
class Collection:
    """Documents, queries and graded judgments, ids as strings, in file order."""

    name: str
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]          # query id -> {doc id: gain}
    notes: list[str] = field(default_factory=list)  # how it was loaded / subsampled

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.docs) or len(self.query_ids) != len(self.queries):
            raise CollectionError(f"{self.name}: ids and texts differ in length")
        for kind, ids in (("document", self.doc_ids), ("query", self.query_ids)):
            if len(set(ids)) != len(ids):
                raise CollectionError(f"{self.name}: duplicate {kind} ids")

    def gain_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Judgments as parallel arrays (query index, document index, gain) over this collection's ids."""
        doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        rows = [(qi, doc_index[d], g) for qi, q in enumerate(self.query_ids)
                for d, g in self.qrels.get(q, {}).items() if d in doc_index]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        q, d, g = (np.array(column) for column in zip(*rows))
        return q.astype(np.int64), d.astype(np.int64), g.astype(np.float64)


def load_collection(path: str | Path) -> Collection:
    """A Cranfield folder (cran.all.1400, cran.qry, cranqrel) or a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CollectionError(f"collection folder {folder} does not exist")
    if all((folder / f).is_file() for f in CRANFIELD_FILES):
        return load_cranfield(folder)
    if all((folder / f).is_file() for f in BEIR_FILES):
        return load_beir(folder)
    raise CollectionError(f"{folder} is neither a Cranfield folder ({', '.join(CRANFIELD_FILES)}) nor a "
                          f"BEIR folder ({', '.join(BEIR_FILES)}, qrels/test.tsv)")


def _smart_records(path: Path) -> list[dict[str, str]]:
    """SMART records: '.I id' starts one, '.T/.A/.B/.W' start fields; field text joined on whitespace."""
    text = _read(path)
    records = []
    for chunk in re.split(r"^\.I[ \t]+", text, flags=re.M)[1:]:
        ident, _, body = chunk.partition("\n")
        fields = {"I": ident.strip()}
        for match in re.finditer(r"^\.([A-Z])[ \t]*\n(.*?)(?=^\.[A-Z][ \t]*\n|\Z)", body, flags=re.M | re.S):
            fields[match.group(1)] = " ".join(match.group(2).split())
        records.append(fields)
    if not records:
        raise CollectionError(f"{path} holds no '.I' records")
    return records


def load_cranfield(folder: str | Path) -> Collection:
    """Cranfield: documents' .W text (which repeats the title; the title where .W is empty),
    queries in cran.qry order; cranqrel numbers queries by their position in cran.qry (1..225),
    not by the .I ids printed there, and its codes map to gains by ``CRANFIELD_GAINS``."""
    folder = Path(folder)
    docs = _smart_records(folder / "cran.all.1400")
    queries = _smart_records(folder / "cran.qry")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(_read(folder / "cranqrel").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            position, doc, code = (int(x) for x in line.split())
            gain = CRANFIELD_GAINS[code]
            if position < 1:
                raise IndexError(position)
            query_id = queries[position - 1]["I"]
        except (ValueError, KeyError, IndexError):
            raise CollectionError(f"{folder / 'cranqrel'} line {number}: expected 'query-position doc-id code' "
                                  f"with position 1..{len(queries)} and code in {sorted(CRANFIELD_GAINS)}, "
                                  f"got {line.strip()!r}") from None
        qrels.setdefault(query_id, {})[str(doc)] = gain
    return Collection(
        name="cranfield",
        doc_ids=[r["I"] for r in docs],
        docs=[r.get("W") or r.get("T", "") for r in docs],
        query_ids=[r["I"] for r in queries],
        queries=[r.get("W", "") for r in queries],
        qrels=qrels,
        notes=["qrels: query number = position in cran.qry; gain = 5 - Cleverdon code (1→4 … 4→1, -1→0)"],
    )


def load_beir(folder: str | Path, split: str = "test") -> Collection:
    """BEIR layout: corpus.jsonl (_id, title, text), queries.jsonl (_id, text), qrels/<split>.tsv
    (query-id, corpus-id, score; header line). Documents are 'title text' as BEIR's models embed
    them; only queries that have judgments are kept."""
    folder = Path(folder)
    corpus = _jsonl(folder / "corpus.jsonl", ("_id", "text"))
    queries = _jsonl(folder / "queries.jsonl", ("_id", "text"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise CollectionError(f"BEIR folder {folder} has no qrels/{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    rows = list(csv.reader(_read(qrels_path).splitlines(), delimiter="\t"))
    for number, row in enumerate(rows, start=1):
        if number == 1 and len(row) == 3 and not row[2].lstrip("-").isdigit():
            continue  # header: query-id corpus-id score
        if not row:
            continue
        if len(row) != 3 or not row[2].lstrip("-").isdigit():
            raise CollectionError(f"{qrels_path} line {number}: expected 'query-id<TAB>corpus-id<TAB>score', got {row!r}")
        qrels.setdefault(row[0], {})[row[1]] = max(int(row[2]), 0)
    kept = [q for q in queries if q["_id"] in qrels]
    if not kept:
        raise CollectionError(f"no query in {folder / 'queries.jsonl'} has judgments in {qrels_path}")
    return Collection(
        name=folder.name,
        doc_ids=[d["_id"] for d in corpus],
        docs=[" ".join(x for x in (d.get("title") or "", d["text"]) if x).strip() for d in corpus],
        query_ids=[q["_id"] for q in kept],
        queries=[q["text"] for q in kept],
        qrels=qrels,
        notes=[f"BEIR qrels/{split}.tsv; {len(queries) - len(kept)} queries without judgments dropped"],
    )


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    records = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(line, f"{path} line {number}", CollectionError)
        if any(not isinstance(record.get(k), (str, int)) for k in required):
            raise CollectionError(f"{path} line {number} needs fields {', '.join(required)}")
        record["_id"] = str(record["_id"])
        records.append(record)
    return records


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CollectionError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CollectionError(f"cannot read {path}: {err}") from None


def subsample(collection: Collection, queries: int | None = None, docs: int | None = None,
              seed: int = 0) -> Collection:
    """A smaller collection: ``queries`` queries drawn at random, and a corpus of every document
    judged relevant to them plus random others up to ``docs`` (more when their relevant
    documents alone exceed it). Deterministic for a seed; file order is kept."""
    rng = np.random.default_rng(seed)
    query_ids = collection.query_ids
    if queries is not None and queries < len(query_ids):
        query_ids = [query_ids[i] for i in sorted(rng.choice(len(query_ids), queries, replace=False))]
    keep_q = set(query_ids)
    doc_ids = collection.doc_ids
    if docs is not None and docs < len(doc_ids):
        relevant = {d for q in keep_q for d, g in collection.qrels.get(q, {}).items() if g > 0}
        others = [i for i, d in enumerate(doc_ids) if d not in relevant]
        n_extra = max(docs - len(relevant & set(doc_ids)), 0)
        extra = {doc_ids[i] for i in rng.choice(others, min(n_extra, len(others)), replace=False)}
        doc_ids = [d for d in doc_ids if d in relevant or d in extra]
    keep_d = set(doc_ids)
    q_text = dict(zip(collection.query_ids, collection.queries))
    d_text = dict(zip(collection.doc_ids, collection.docs))
    return Collection(
        name=collection.name,
        doc_ids=doc_ids, docs=[d_text[d] for d in doc_ids],
        query_ids=query_ids, queries=[q_text[q] for q in query_ids],
        qrels={q: {d: g for d, g in collection.qrels.get(q, {}).items() if d in keep_d} for q in query_ids},
        notes=collection.notes + [f"subsample (seed {seed}): {len(query_ids)} of {len(collection.query_ids)} queries "
                                  f"at random; corpus = all their relevant documents + random others, "
                                  f"{len(doc_ids)} of {len(collection.doc_ids)} documents"],
    )
