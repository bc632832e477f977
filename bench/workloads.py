"""The five workloads of issue 8 and the size of each in a full and a --quick run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.data import Cutter, cranfield_docs, cranfield_queries, token_lengths
from bench.models import BenchModel


@dataclass(frozen=True)
class Sizes:
    """How much work one run does: the full run's timed part took 31 min on 2 cores (2026-12-04, (d) at 3 rounds;
    ~4 min more at 5), --quick ~3; the one-off set-up and exports come on top on a fresh checkout."""

    rounds: int = 5                 # (d) and any workload without its own: 3 rounds left the reranker's ratios
                                    # 1.10-1.16x apart between medians and same-round ratios (2026-12-04)
    docs512_rounds: int = 5         # (a) is one call per round: more rounds for a steadier median
    docs512: int = 8
    corpus: int = 64
    corpus_rounds: int = 5          # (b): one call per round, 3 rounds spread 1.4x on a 2-core VM (2026-12-04)
    query_calls: int = 5            # (c): calls per turn, in more turns: the machine drifts between turns,
    query_rounds: int = 10          # so many short turns give a steadier median than a few long ones
    passages: int = 20
    cold_rounds: int = 2


FULL = Sizes()
QUICK = Sizes(rounds=2, docs512_rounds=2, docs512=4, corpus=24, corpus_rounds=2, query_calls=3, query_rounds=2, passages=4, cold_rounds=1)


@dataclass(frozen=True)
class Workload:
    """One timed call shape: which model, the payload, how results are expressed."""

    key: str
    title: str
    kind: str                       # embedder | reranker
    payload: dict
    items: int                      # documents or passages per call (for items/s)
    unit: str                       # "docs/s", "ms", "s"
    calls_per_round: int = 1
    rounds: int | None = None       # default: Sizes.rounds
    warmup: dict | None = None      # untimed first call (default: the payload itself)
    skip: tuple[str, ...] = ()      # contenders too slow to run it within the time budget
    tokens: dict = field(default_factory=dict)
    lengths: tuple[int, ...] = ()   # tokens of each item of one call (specials in, untruncated): the efficiency's ops


def build_workloads(sizes: Sizes, models: dict[str, BenchModel]) -> list[Workload]:
    """Texts cut from real Cranfield text with each model's tokenizer, lengths recorded."""
    out: list[Workload] = []
    if "embedder" in models:
        out += _embedder_workloads(sizes, models["embedder"].tokenizer_json)
    if "reranker" in models:
        out += _reranker_workloads(sizes, models["reranker"].tokenizer_json)
    return out


def _embedder_workloads(sizes: Sizes, emb_tok) -> list[Workload]:
    docs = Cutter(emb_tok).pieces(sizes.docs512, 512, seed=1)
    corpus = cranfield_docs()
    random.Random(0).shuffle(corpus)
    corpus = corpus[: sizes.corpus]
    lengths = token_lengths(emb_tok, corpus)
    query = Cutter(emb_tok).pieces(1, 32, seed=2)
    doc_lengths, query_lengths = token_lengths(emb_tok, docs), token_lengths(emb_tok, query)
    return [
        Workload("a_docs512", f"(a) embedder, {len(docs)} docs × 512 tokens", "embedder",
                 {"texts": docs}, len(docs), "docs/s", rounds=sizes.docs512_rounds, warmup={"texts": docs[:2]},
                 tokens={"per_doc": doc_lengths[0]}, lengths=tuple(doc_lengths)),
        Workload("b_cranfield", f"(b) embedder, Cranfield corpus ({len(corpus)} docs, mixed lengths)",
                 "embedder", {"texts": corpus}, len(corpus), "docs/s", rounds=sizes.corpus_rounds,
                 warmup={"texts": corpus[:8]}, skip=("ST torch",),
                 tokens={"total": sum(lengths), "min": min(lengths), "max": max(lengths),
                         "mean": round(sum(lengths) / len(lengths), 1)}, lengths=tuple(lengths)),
        Workload("c_query", "(c) embedder, one 32-token query: latency", "embedder",
                 {"texts": query}, 1, "ms", calls_per_round=sizes.query_calls, rounds=sizes.query_rounds,
                 tokens={"per_doc": query_lengths[0]}, lengths=tuple(query_lengths)),
    ]


def _reranker_workloads(sizes: Sizes, rr_tok) -> list[Workload]:
    rr_query = cranfield_queries()[0]
    out = []
    for length in (256, 512):
        passages = Cutter(rr_tok).pieces(sizes.passages, length, seed=3)
        pairs = token_lengths(rr_tok, [(rr_query, p) for p in passages])
        out.append(Workload(f"d_rerank{length}", f"(d) reranker, 1 query × {len(passages)} passages of {length} tokens",
                            "reranker", {"query": rr_query, "passages": passages}, len(passages), "s",
                            warmup={"query": rr_query, "passages": passages[:2]}, skip=("ST torch",),
                            tokens={"per_passage": length, "pair": pairs[0]}, lengths=tuple(pairs)))
    return out
