"""The offline `evaluate` modules agree with ranx to 1e-6 on seeded random runs with ties, and load from paths."""

from __future__ import annotations

import numpy as np
import pytest

from dlsearch.evaluation import metrics as M
from dlsearch.evaluation.metric_modules import METRIC_MODULES, load_metric, metric_module_path

N_QUERIES = 50
N_ITEMS = 30


def _run_with_ties(seed: int):
    """Rankings given unordered with scores that tie a lot; ranx gets our resolved order as distinct scores."""
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in rng.choice(500, size=N_ITEMS, replace=False)]
    preds, scores, refs, qrels, run = [], [], [], {}, {}
    for q in range(N_QUERIES):
        n = int(rng.integers(1, N_ITEMS))
        ret = [str(x) for x in rng.choice(ids, size=n, replace=False)]
        s = [float(x) for x in rng.integers(0, 3, size=n)]
        rel = [str(x) for x in rng.choice(ids, size=int(rng.integers(1, 5)), replace=False)]
        resolved = M.rank_by_score(ret, s)
        preds.append(ret)
        scores.append(s)
        refs.append(rel)
        run[f"q{q:04d}"] = {d: float(n - i) for i, d in enumerate(resolved)}
        qrels[f"q{q:04d}"] = {d: 1 for d in rel}
    return preds, scores, refs, qrels, run


@pytest.mark.parametrize("seed", [3, 4])
def test_ranking_modules_match_ranx(seed: int) -> None:
    ranx = pytest.importorskip("ranx")
    preds, scores, refs, qrels, run = _run_with_ties(seed)
    cases = [("recall_at_k", 10, "recall@10"), ("hit_at_k", 5, "hit_rate@5"), ("ndcg_at_k", 10, "ndcg@10"),
             ("mrr", None, "mrr"), ("mrr", 3, "mrr@3")]
    expected = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), [c[2] for c in cases])
    for module, k, ranx_name in cases:
        out = load_metric(module).compute(predictions=preds, references=refs, k=k, scores=scores)
        (value,) = out.values()
        assert value == pytest.approx(expected[ranx_name], abs=1e-6), (module, k)


def test_ties_change_the_answer_and_follow_the_id_rule() -> None:
    recall = load_metric("recall_at_k")
    # equal scores: "12" < "7" as strings, so "12" takes the single slot
    assert recall.compute(predictions=[["7", "12"]], references=[["7"]], k=1, scores=[[1.0, 1.0]])["recall@1"] == 0.0
    assert recall.compute(predictions=[["7", "12"]], references=[["7"]], k=1)["recall@1"] == 1.0


def test_generation_modules() -> None:
    assert load_metric("valid_item_rate").compute(predictions=["1", None, "x", "2"], catalog_ids=["1", "2"]) == {"valid_item_rate": 0.5}
    assert load_metric("duplicate_rate").compute(predictions=[["a", "a"], ["b", "c"]]) == {"duplicate_rate": 0.25}
    assert load_metric("exact_match").compute(predictions=["<a_1><b_2>", " x"], references=["<a_1><b_2>", "y"]) == {"exact_match": 0.5}


def test_every_module_loads_from_its_directory_or_script_path() -> None:
    import evaluate

    for name in METRIC_MODULES:
        assert (metric_module_path(name) / f"{name}.py").is_file()
    m = evaluate.load(str(metric_module_path("hit_at_k") / "hit_at_k.py"), keep_in_memory=True)
    assert m.compute(predictions=[["a"]], references=[["a"]], k=1) == {"hit@1": 1.0}
    with pytest.raises(ValueError, match="unknown metric module"):
        metric_module_path("accuracy")


def test_ranking_modules_name_their_metric_and_refuse_unknown_arguments() -> None:
    from dlsearch.evaluation.metric_modules import load_metric

    got = {name: load_metric(name).compute(predictions=[["1", "2"]], references=[["2"]]) for name in ("recall_at_k", "hit_at_k", "ndcg_at_k", "mrr")}
    assert got == {"recall_at_k": {"recall@10": 1.0}, "hit_at_k": {"hit@10": 1.0}, "ndcg_at_k": {"ndcg@10": pytest.approx(1 / np.log2(3))},
                   "mrr": {"mrr": 0.5}}
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['kk'\]"):
        load_metric("hit_at_k").compute(predictions=[["1"]], references=[["1"]], kk=3)
