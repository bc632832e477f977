"""Rebuild the default INT8 calibration sets from /work/shared/data (Cranfield, Tatoeba); run once, output committed.

english.txt: 256 Cranfield abstracts (one per line, whitespace collapsed).
multilingual.txt: 12 lines in each of 24 languages from Tatoeba (1-4 consecutive sentences per line, so lengths
vary), plus 64 of the English abstracts.
"""

from __future__ import annotations

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


def main(data: Path) -> None:
    rng = random.Random(0)
    here = Path(__file__).parent
    abstracts = cranfield_abstracts(data / "cranfield" / "cran.all.1400")
    english = rng.sample(abstracts, 256)
    (here / "english.txt").write_text("\n".join(english) + "\n", encoding="utf-8")
    multilingual = [line for lang in LANGUAGES for line in tatoeba_lines(data / "tatoeba", lang, rng, 12)]
    multilingual += english[:64]
    rng.shuffle(multilingual)
    (here / "multilingual.txt").write_text("\n".join(multilingual) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data"))
