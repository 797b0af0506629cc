"""evaluation/metrics.py: hand-checked cases, the tie rule, empty cases, and agreement with ranx to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest

from dlsearch.evaluation import metrics as M

N_QUERIES = 60
N_ITEMS = 40


def test_hand_computed_values() -> None:
    ranking, rel = ["a", "b", "c", "d"], {"b", "d", "z"}
    assert M.recall_at_k(ranking, rel, 2) == pytest.approx(1 / 3)
    assert M.recall_at_k(ranking, rel, 4) == pytest.approx(2 / 3)
    assert M.hit_at_k(ranking, rel, 1) == 0.0 and M.hit_at_k(ranking, rel, 2) == 1.0
    assert M.reciprocal_rank(ranking, rel) == pytest.approx(0.5)
    assert M.reciprocal_rank(ranking, rel, k=1) == 0.0
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert M.ndcg_at_k(ranking, rel, 4) == pytest.approx(dcg / idcg)


def test_repeats_count_once_at_first_position() -> None:
    assert M.recall_at_k(["a", "a", "b"], {"a"}, 3) == 1.0
    assert M.recall_at_k(["x", "x", "b"], {"b"}, 2) == 0.0  # the repeat still uses up slot 2
    assert M.ndcg_at_k(["a", "a"], {"a", "b"}, 2) == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert M.duplicate_rate([["a", "a", "b"], ["c"]]) == pytest.approx(1 / 4)


def test_ties_broken_by_id_ascending_as_strings() -> None:
    ids = ["9", "10", "2", "b", "a"]
    assert M.rank_by_score(ids, [0.5, 0.5, 0.5, 1.0, 0.5]) == ["b", "10", "2", "9", "a"]
    assert M.rank_by_score(ids, [0.5, 0.5, 0.5, 1.0, 0.5], k=2) == ["b", "10"]
    s, r = M.top_k_rows(np.array([[0.5, 0.5, 0.5, 1.0, 0.5], [0, 0, -np.inf, 0, -np.inf]]), 3, M.id_tie_order(ids))
    assert [[ids[i] for i in row] for row in r.tolist()] == [["b", "10", "2"], ["10", "9", "b"]]
    s, r = M.top_k_rows(np.array([[-np.inf, 1.0, -np.inf, -np.inf, -np.inf]]), 3, M.id_tie_order(ids))
    assert r.tolist() == [[1, -1, -1]] and s[0, 1] == -np.inf and s.dtype == np.float32 and r.dtype == np.int64


def test_empty_cases_are_explicit() -> None:
    assert M.recall_at_k([], {"a"}, 10) == 0.0 and M.reciprocal_rank([], {"a"}) == 0.0
    with pytest.raises(ValueError, match="no relevant"):
        M.recall_at_k(["a"], set(), 10)
    with pytest.raises(ValueError, match="k must be"):
        M.hit_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="no queries"):
        M.per_query_scores([], [], "recall@10")
    with pytest.raises(ValueError, match="query 1"):
        M.per_query_scores([["a"], ["b"]], [{"a"}, set()], "recall@10")
    with pytest.raises(ValueError):
        M.valid_item_rate([], {"a"})
    with pytest.raises(ValueError):
        M.duplicate_rate([[], []])
    with pytest.raises(ValueError):
        M.exact_match([], [])
    with pytest.raises(ValueError, match="needs a cut-off"):
        M.parse_metric("recall")
    with pytest.raises(ValueError, match="NaN"):
        M.rank_by_score(["a"], [float("nan")])


def test_generation_metrics() -> None:
    assert M.valid_item_rate(["1", "2", None, "x"], {"1", "2"}) == 0.5
    assert M.exact_match([" 12 ", "13", None], ["12", "14", "15"]) == pytest.approx(1 / 3)


def _random_run_with_ties(seed: int) -> tuple[dict, dict, list[list[str]], list[set[str]]]:
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in rng.choice(1000, size=N_ITEMS, replace=False)]
    qrels, run, rankings, relevants = {}, {}, [], []
    for q in range(N_QUERIES):
        n_ret = int(rng.integers(1, N_ITEMS))
        ret = list(rng.choice(ids, size=n_ret, replace=False))
        scores = rng.integers(0, 4, size=n_ret).astype(float)  # 4 score levels: many ties
        ranking = M.rank_by_score(ret, scores)
        rel = set(rng.choice(ids, size=int(rng.integers(1, 6)), replace=False))
        # ranx orders ties with an unstable argsort, so it gets our resolved order as strictly decreasing scores
        run[f"q{q:04d}"] = {doc: float(n_ret - pos) for pos, doc in enumerate(ranking)}
        qrels[f"q{q:04d}"] = {doc: 1 for doc in rel}  # zero-padded: ranx returns queries in sorted id order
        rankings.append(ranking)
        relevants.append(rel)
    return qrels, run, rankings, relevants


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_ranx_on_random_runs_with_ties(seed: int) -> None:
    ranx = pytest.importorskip("ranx")
    qrels, run, rankings, relevants = _random_run_with_ties(seed)
    ours_to_ranx = {"recall@5": "recall@5", "recall@10": "recall@10", "hit@10": "hit_rate@10",
                    "ndcg@10": "ndcg@10", "ndcg@3": "ndcg@3", "mrr": "mrr", "mrr@5": "mrr@5"}
    got = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(ours_to_ranx.values()), return_mean=False)
    for ours, theirs in ours_to_ranx.items():
        np.testing.assert_allclose(M.per_query_scores(rankings, relevants, ours), got[theirs], atol=1e-6, err_msg=ours)
