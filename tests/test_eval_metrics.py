"""Ranking metrics against hand computations and plain-loop re-implementations; collection loaders
on small synthetic folders and on the real Cranfield files (its query-numbering quirk)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import SHARED_DATA
from granite_rt.errors import CollectionError
from granite_rt.eval.collections import Collection, load_beir, load_collection, load_cranfield, subsample
from granite_rt.eval.metrics import (Judgments, cosine_rows, jaccard_at_k, kendall_tau, ndcg_at_k,
                                     recall_at_k, summary, top_k)

CRANFIELD = SHARED_DATA / "cranfield"


def judgments(qrels: dict[int, dict[int, float]], n_queries: int, n_docs: int) -> Judgments:
    rows = [(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    q, d, g = (np.array(c) for c in zip(*rows))
    return Judgments.from_arrays(q, d, g, n_queries, n_docs)


def test_ndcg_and_recall_match_a_hand_computation():
    # one query, docs ranked 0..4 by score; doc 1 has gain 3, doc 3 gain 1, doc 4 gain 2
    ranking = top_k(np.array([[0.9, 0.8, 0.7, 0.6, 0.5]]), 5)
    assert ranking.tolist() == [[0, 1, 2, 3, 4]]
    j = judgments({0: {1: 3, 3: 1, 4: 2}}, 1, 5)
    dcg = 3 / math.log2(3) + 1 / math.log2(5) + 2 / math.log2(6)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranking, j, k=10)[0] == pytest.approx(dcg / idcg, abs=1e-12)
    # @2 only doc 1 counts: dcg 3/log2(3), ideal 3 + 2/log2(3)
    assert ndcg_at_k(ranking, j, k=2)[0] == pytest.approx((3 / math.log2(3)) / (3 + 2 / math.log2(3)), abs=1e-12)
    assert recall_at_k(ranking, j, k=2)[0] == pytest.approx(1 / 3)
    assert recall_at_k(ranking, j, k=5)[0] == 1.0


def test_judged_non_relevant_and_unjudged_queries():
    ranking = np.array([[0, 1, 2], [2, 1, 0]])
    j = judgments({0: {0: 0, 2: 1}, 1: {1: 0}}, 2, 3)   # gain 0 = judged, not relevant
    ndcg = ndcg_at_k(ranking, j, k=10)
    assert ndcg[0] == pytest.approx(1 / math.log2(4))   # relevant doc at rank 3
    assert math.isnan(ndcg[1]) and math.isnan(recall_at_k(ranking, j)[1])
    assert summary(ndcg)["mean"] == pytest.approx(ndcg[0])  # NaN rows are left out of the mean


def _loop_ndcg(scores, qrels, k):
    """Straight from the definition, one query at a time."""
    out = []
    for q, row in enumerate(scores):
        ranked = sorted(range(len(row)), key=lambda d: (-row[d], d))[:k]
        gains = qrels.get(q, {})
        ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
        if not ideal:
            continue
        dcg = sum(gains.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked))
        out.append(dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal)))
    return out


def _loop_recall(scores, qrels, k):
    out = []
    for q, row in enumerate(scores):
        ranked = set(sorted(range(len(row)), key=lambda d: (-row[d], d))[:k])
        relevant = {d for d, g in qrels.get(q, {}).items() if g > 0}
        if relevant:
            out.append(len(ranked & relevant) / len(relevant))
    return out


def test_vectorised_metrics_equal_plain_loops_on_random_data():
    rng = np.random.default_rng(7)
    n_q, n_d = 40, 300
    scores = np.round(rng.normal(size=(n_q, n_d)), 1)  # rounded: many ties, broken by doc index
    qrels = {q: {int(d): int(rng.integers(0, 5)) for d in rng.choice(n_d, rng.integers(0, 12), replace=False)}
             for q in range(n_q)}
    j = judgments({q: v for q, v in qrels.items() if v}, n_q, n_d)
    ranking = top_k(scores, 100)
    got_ndcg = ndcg_at_k(ranking, j, 10)
    got_recall = recall_at_k(ranking, j, 100)
    np.testing.assert_allclose(got_ndcg[np.isfinite(got_ndcg)], _loop_ndcg(scores, qrels, 10), atol=1e-12)
    np.testing.assert_allclose(got_recall[np.isfinite(got_recall)], _loop_recall(scores, qrels, 100), atol=1e-12)


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.2], [3, 2, 1, 0, -1]])
    assert top_k(scores, 3).tolist() == [[3, 1, 2], [0, 1, 2]]
    assert top_k(scores, 9).tolist() == [[3, 1, 2, 4, 0], [0, 1, 2, 3, 4]]


def test_kendall_tau_hand_values_and_scipy():
    # one discordant pair of 6: (5 - 1) / 6
    assert kendall_tau(np.array([1, 2, 3, 4.0]), np.array([1, 3, 2, 4.0]))[0] == pytest.approx(4 / 6)
    assert kendall_tau(np.array([1, 2, 3.0]), np.array([3, 2, 1.0]))[0] == pytest.approx(-1)
    assert np.isnan(kendall_tau(np.array([1, 1, 1.0]), np.array([1, 2, 3.0]))[0])
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(25, 20)), 1)     # with ties: τ-b
    y = np.round(x + rng.normal(scale=0.5, size=x.shape), 1)
    expected = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(kendall_tau(x, y), expected, atol=1e-12)


def test_jaccard_cosine_and_summary():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    b = np.array([[4, 3, 2, 1], [1, 2, 5, 6]])
    assert jaccard_at_k(a, b, k=4).tolist() == [1.0, 2 / 6]
    assert jaccard_at_k(a, b, k=2).tolist() == [0.0, 1.0]
    np.testing.assert_allclose(cosine_rows(np.array([[1.0, 0], [1, 1]]), np.array([[2.0, 0], [-3, 3]])), [1.0, 0.0], atol=1e-15)
    values = np.arange(101, dtype=float)
    assert summary(values) == {"mean": 50.0, "p1": 1.0, "min": 0.0}


def _write_cranfield(folder):
    folder.mkdir()
    (folder / "cran.all.1400").write_text(
        ".I 1\r\n.T\r\nwing flow .\r\n.A\r\nsomeone\r\n.B\r\nj. 1\r\n.W\r\nwing flow .\r\nlift of a wing .\r\n"
        ".I 2\n.T\nempty body .\n.A\n.B\n.W\n"
        ".I 3\n.T\nshock\n.W\nshock waves\n", encoding="utf-8")
    # printed ids 001 and 004; cranqrel numbers them 1 and 2 (their position)
    (folder / "cran.qry").write_text(".I 001\n.W\nwhat is lift ?\n.I 004\n.W\nshock\nwaves ?\n", encoding="utf-8")
    (folder / "cranqrel").write_text("1 1 1 \n1 2 -1\n2 3 4\n2 1 2\n", encoding="utf-8")


def test_cranfield_loader_numbers_queries_by_position_and_maps_codes_to_gains(tmp_path):
    _write_cranfield(tmp_path / "cran")
    c = load_collection(tmp_path / "cran")
    assert c.doc_ids == ["1", "2", "3"] and c.query_ids == ["001", "004"]
    assert c.docs == ["wing flow . lift of a wing .", "empty body .", "shock waves"]
    assert c.queries == ["what is lift ?", "shock waves ?"]
    assert c.qrels == {"001": {"1": 4, "2": 0}, "004": {"3": 1, "1": 3}}
    q, d, g = c.gain_arrays()
    assert sorted(zip(q.tolist(), d.tolist(), g.tolist())) == [(0, 0, 4), (0, 1, 0), (1, 0, 3), (1, 2, 1)]


@pytest.mark.parametrize("line, problem", [("3 1 1", "position 1..2"), ("1 1 7", "code"), ("1 x 1", "line 1")])
def test_cranfield_loader_rejects_bad_qrels(tmp_path, line, problem):
    _write_cranfield(tmp_path / "cran")
    (tmp_path / "cran" / "cranqrel").write_text(line + "\n")
    with pytest.raises(CollectionError, match=problem):
        load_cranfield(tmp_path / "cran")


@pytest.mark.skipif(not CRANFIELD.is_dir(), reason="shared Cranfield data not present")
def test_real_cranfield_collection():
    c = load_collection(CRANFIELD)
    assert (len(c.docs), len(c.queries)) == (1400, 225)
    assert sum(len(v) for v in c.qrels.values()) == 1837          # lines of cranqrel
    # cranqrel's query 3 is the third query of cran.qry, printed as .I 004; "3 5 3" → gain 2
    assert c.query_ids[2] == "004" and c.qrels["004"]["5"] == 2
    assert c.queries[2].startswith("what problems of heat conduction in composite slabs")
    assert all(any(g > 0 for g in c.qrels[q].values()) for q in c.query_ids)
    small = subsample(c, queries=30, docs=300, seed=1)
    assert len(small.queries) == 30 and len(small.docs) == 300
    relevant = {d for q in small.query_ids for d, g in c.qrels[q].items() if g > 0}
    assert relevant <= set(small.doc_ids)
    assert subsample(c, queries=30, docs=300, seed=1).doc_ids == small.doc_ids   # deterministic


def test_beir_loader(tmp_path):
    folder = tmp_path / "scifact"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "d1", "title": "Water", "text": "H2O is water."},
        {"_id": 2, "title": "", "text": "Salt is NaCl."}]) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "q1", "text": "formula of water"}, {"_id": "q2", "text": "unjudged"}]) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t2\t0\n")
    c = load_collection(folder)
    assert c.doc_ids == ["d1", "2"] and c.docs == ["Water H2O is water.", "Salt is NaCl."]
    assert c.query_ids == ["q1"] and c.qrels == {"q1": {"d1": 2, "2": 0}}
    (folder / "qrels" / "test.tsv").write_text("q1\td1\n")
    with pytest.raises(CollectionError, match="line 1"):
        load_beir(folder)


def test_collection_errors_name_the_problem(tmp_path):
    with pytest.raises(CollectionError, match="does not exist"):
        load_collection(tmp_path / "nowhere")
    with pytest.raises(CollectionError, match="neither a Cranfield folder"):
        load_collection(tmp_path)
    with pytest.raises(CollectionError, match="duplicate document ids"):
        Collection("x", ["a", "a"], ["t", "u"], [], [], {})
