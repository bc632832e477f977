"""Rebuild the default INT8 calibration sets and the INT8 gate's probe set from /work/shared/data (Cranfield,
Tatoeba); run once, output committed.

english.txt: 256 Cranfield abstracts (one per line, whitespace collapsed).
multilingual.txt: 12 lines in each of 24 languages from Tatoeba (1-4 consecutive sentences per line, so lengths
vary), plus 64 of the English abstracts.
granite_rt/calibration/int8_probes.json (the gate, granite_rt.int8_gate): none of the calibration texts. 64 Cranfield queries
and 3 one-sentence Tatoeba queries per language; passages: for each Cranfield query one abstract judged relevant
to it, 3 Tatoeba lines of 2-4 sentences per language and 12 long passages (8 abstracts each, longer than
512-token models take); per query 8 candidate passages for rerankers (its relevant / same-language ones first).
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

LANGUAGES = ("ara", "ces", "cmn", "dan", "deu", "ell", "fin", "fra", "heb", "hin", "ind", "ita", "jpn", "kor",
             "nld", "pol", "por", "rus", "spa", "swe", "tha", "tur", "ukr", "vie")


def cranfield_abstracts(path: Path) -> list[str]:
    abstracts, current, in_text = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(".I"):
            if current:
                abstracts.append(" ".join(" ".join(current).split()))
            current, in_text = [], False
        elif line.startswith(".W"):
            in_text = True
        elif re.match(r"^\.[TABW]$", line):
            in_text = False
        elif in_text:
            current.append(line)
    if current:
        abstracts.append(" ".join(" ".join(current).split()))
    return [a for a in abstracts if a]


def tatoeba_lines(folder: Path, lang: str, rng: random.Random, count: int) -> list[str]:
    sentences = (folder / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
    lines = []
    for _ in range(count):
        start, width = rng.randrange(len(sentences) - 4), rng.randint(1, 4)
        lines.append(" ".join(s.strip() for s in sentences[start:start + width]))
    return lines


def cranfield_queries(path: Path) -> list[str]:
    queries, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(".I"):
            if current:
                queries.append(" ".join(" ".join(current).split()).rstrip(" ."))
            current = []
        elif not line.startswith(".W"):
            current.append(line)
    if current:
        queries.append(" ".join(" ".join(current).split()).rstrip(" ."))
    return queries


def probes(data: Path, calibration: set[str], rng: random.Random) -> dict:
    """Queries, passages and per-query reranker candidates, disjoint from the calibration texts."""
    abstracts = cranfield_abstracts(data / "cranfield" / "cran.all.1400")
    judged: dict[int, list[int]] = {}
    for line in (data / "cranfield" / "cranqrel").read_text().splitlines():
        q, d, grade = (int(x) for x in line.split()[:3])
        if grade > 0:
            judged.setdefault(q - 1, []).append(d - 1)
    queries, passages, owner = [], [], []  # owner: the query (or language) each passage belongs to
    for q, text in enumerate(cranfield_queries(data / "cranfield" / "cran.qry")):
        docs = [d for d in judged.get(q, []) if d < len(abstracts) and abstracts[d] not in calibration
                and abstracts[d] not in passages]
        if docs and len(queries) < 64:
            queries.append(text)
            passages.append(abstracts[docs[0]])
            owner.append(f"q{len(queries) - 1}")
    language_of_query = {}
    for lang in LANGUAGES:
        sentences = [s.strip() for s in (data / "tatoeba" / f"tatoeba.{lang}-eng.{lang}").read_text(
            encoding="utf-8").splitlines() if s.strip() and s.strip() not in calibration]
        picks = rng.sample(range(len(sentences) - 4), 6)
        for start in picks[:3]:
            language_of_query[len(queries)] = lang
            queries.append(sentences[start])
        for start in picks[3:]:
            passages.append(" ".join(sentences[start:start + rng.randint(2, 4)]))
            owner.append(lang)
    unused = [a for a in abstracts if a not in calibration and a not in passages]
    for i in range(12):
        passages.append(" ".join(unused[i * 8:(i + 1) * 8]))
        owner.append("long")
    candidates = []
    for q in range(len(queries)):
        mine = [p for p, o in enumerate(owner) if o == language_of_query.get(q, f"q{q}")]
        others = [p for p in range(len(passages)) if p not in mine]
        candidates.append(mine + rng.sample(others, 8 - len(mine)))
    return {"source": "export/calibration/build_sets.py (Cranfield queries/abstracts, LASER Tatoeba test set)",
            "queries": queries, "passages": passages, "candidates": candidates}


def main(data: Path) -> None:
    rng = random.Random(0)
    shipped = Path(__file__).resolve().parents[2] / "granite_rt" / "calibration"
    abstracts = cranfield_abstracts(data / "cranfield" / "cran.all.1400")
    english = rng.sample(abstracts, 256)
    (shipped / "english.txt").write_text("\n".join(english) + "\n", encoding="utf-8")
    multilingual = [line for lang in LANGUAGES for line in tatoeba_lines(data / "tatoeba", lang, rng, 12)]
    multilingual += english[:64]
    rng.shuffle(multilingual)
    (shipped / "multilingual.txt").write_text("\n".join(multilingual) + "\n", encoding="utf-8")
    calibration = set(english) | set(multilingual) | {s for line in multilingual for s in line.split(" ")}
    calibration |= {s.strip() for lang in LANGUAGES for s in (data / "tatoeba" / f"tatoeba.{lang}-eng.{lang}")
                    .read_text(encoding="utf-8").splitlines() if any(s.strip() and s.strip() in line
                                                                     for line in multilingual)}
    probe_set = probes(data, calibration, random.Random(1))
    (shipped / "int8_probes.json").write_text(
        json.dumps(probe_set, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data"))
