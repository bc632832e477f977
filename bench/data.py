"""Benchmark texts: real Cranfield/Tatoeba text, cut to exact token counts with the model's tokenizer."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRANFIELD = SHARED_DATA / "cranfield"
TATOEBA = SHARED_DATA / "tatoeba"


def _smart_records(path: Path) -> list[dict[str, str]]:
    """Parse a SMART file (.I id, then .T/.A/.B/.W fields) into dicts of field → text."""
    records = []
    for chunk in re.split(r"^\.I ", path.read_text(encoding="utf-8", errors="replace"), flags=re.M)[1:]:
        fields: dict[str, str] = {}
        parts = re.split(r"^\.([TABW])\s*$", chunk, flags=re.M)
        for key, value in zip(parts[1::2], parts[2::2]):
            fields[key] = " ".join(value.split())
        records.append(fields)
    return records


def cranfield_docs() -> list[str]:
    """The 1,400 Cranfield abstracts as title + text, lengths as they come."""
    docs = []
    for rec in _smart_records(CRANFIELD / "cran.all.1400"):
        text = " ".join(x for x in (rec.get("T", ""), rec.get("W", "")) if x).strip()
        if text:
            docs.append(text)
    return docs


def cranfield_queries() -> list[str]:
    """The 225 Cranfield queries in file order."""
    return [rec["W"] for rec in _smart_records(CRANFIELD / "cran.qry") if rec.get("W")]


def tokenizer_corpus(max_lines_per_file: int = 300) -> list[str]:
    """Text to train the bench models' tokenizer on: Cranfield plus every Tatoeba language."""
    texts = cranfield_docs() + cranfield_queries()
    for path in sorted(TATOEBA.glob("tatoeba.*-eng.*")):
        texts.extend(path.read_text(encoding="utf-8", errors="replace").splitlines()[:max_lines_per_file])
    return texts


@dataclass(frozen=True)
class Cutter:
    """Cuts long real text into pieces of an exact token count with one tokenizer."""

    tokenizer_json: Path

    def pieces(self, n: int, tokens: int, seed: int = 0) -> list[str]:
        """``n`` texts, each encoding to ``tokens`` tokens including the special tokens."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.tokenizer_json))
        tok.no_truncation()
        tok.no_padding()
        docs = cranfield_docs()
        random.Random(seed).shuffle(docs)
        stream = " ".join(docs)
        specials = len(tok.encode("").ids)
        enc = tok.encode(stream, add_special_tokens=False)
        out, start_tok = [], 0
        for _ in range(n):
            stop_tok = start_tok + tokens - specials
            if stop_tok >= len(enc.offsets):
                start_tok, stop_tok = 0, tokens - specials  # wrap around (only for huge n)
            text = stream[enc.offsets[start_tok][0]: enc.offsets[stop_tok - 1][1]]
            out.append(self._fit(tok, text, tokens))
            start_tok = stop_tok
        return out

    @staticmethod
    def _fit(tok, text: str, tokens: int) -> str:
        """Trim or extend ``text`` by words until it encodes to exactly ``tokens`` tokens (BPE merges at the cut may shift by one)."""
        words = text.split(" ")
        while len(tok.encode(" ".join(words)).ids) > tokens and len(words) > 1:
            words.pop()
        while len(tok.encode(" ".join(words + ["a"])).ids) <= tokens:
            words.append("a")
        return " ".join(words)


def token_lengths(tokenizer_json: Path, texts: list[str] | list[tuple[str, str]]) -> list[int]:
    """Token count of each text or (query, passage) pair (with special tokens, untruncated)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(texts)]
