"""Reranker long pairs: max_query_tokens cuts queries first, then longest_first truncation as the reference does."""

from __future__ import annotations

import numpy as np
import pytest

QUERY = "what is the heat transfer in a laminar boundary layer over a flat plate at high speed"
DOC = "boundary layer flow over a flat plate at supersonic speeds " * 30


@pytest.fixture(scope="module")
def rr(tiny_reranker_folders):
    from granite_rt import Reranker

    return Reranker(tiny_reranker_folders["export"], backend="onnx", dtype="fp32")


def test_max_query_tokens_cuts_the_query_by_hand(rr):
    tok = rr.tokenizer
    query_ids = tok.untruncated().encode(QUERY, add_special_tokens=False).ids
    assert len(query_ids) > 6
    pairs = [(QUERY, "short document"), (QUERY, DOC)]
    cut = tok.encode_pairs(pairs, max_query_tokens=6)
    # Short pair: [CLS] q[:6] [SEP] doc [SEP]
    doc_ids = tok.untruncated().encode("short document", add_special_tokens=False).ids
    full = tok.encode_pairs([(QUERY, "short document")])[0].ids
    assert cut[0].ids == [full[0], *query_ids[:6], full[len(query_ids) + 1], *doc_ids, full[-1]]
    # Long pair: the cut query is kept whole, the document is truncated to fill max_length.
    assert len(cut[1].ids) == rr.max_length
    assert cut[1].ids[1:7] == query_ids[:6] and cut[1].type_ids.count(0) <= 8


def test_without_max_query_tokens_pairs_match_the_reference_tokenizer(rr, tiny_reranker_checkpoint):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(tiny_reranker_checkpoint)
    pairs = [(QUERY, DOC), (DOC, QUERY), (QUERY, "short")]
    expected = ref([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first",
                   max_length=rr.max_length)["input_ids"]
    assert [e.ids for e in rr.tokenizer.encode_pairs(pairs)] == expected
    # A limit longer than every query changes nothing.
    assert [e.ids for e in rr.tokenizer.encode_pairs(pairs, max_query_tokens=10**6)] == expected


def test_predict_and_rank_with_max_query_tokens(rr):
    query_ids = rr.tokenizer.untruncated().encode(QUERY, add_special_tokens=False)
    cut_query = QUERY[:query_ids.offsets[5][1]]
    docs = ["short document", DOC, "a flat plate"]
    got = rr.predict([(QUERY, d) for d in docs], max_query_tokens=6)
    np.testing.assert_allclose(got, rr.predict([(cut_query, d) for d in docs]), rtol=0, atol=1e-6)
    assert not np.allclose(got, rr.predict([(QUERY, d) for d in docs]), atol=1e-6)
    ranked = rr.rank(QUERY, docs, max_query_tokens=6)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-got, kind="stable"))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_query_tokens"):
            rr.predict([(QUERY, DOC)], max_query_tokens=bad)
