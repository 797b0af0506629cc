"""Ranking and generation metrics, in numpy, for every area to report with the same definitions.

Conventions (shared by every function here and by the `evaluate` modules in evaluation/metric_modules/):

* A *ranking* is a sequence of item ids, best first. A *relevant set* is the gold item ids of that query
  (binary relevance; order and repeats in it do not matter).
* **Ties.** Where items carry scores, they are ordered by score descending and, among equal scores, by item id
  ascending in Python string order (code-point order: "10" < "9" < "a"; ids are compared as text, never as
  numbers). So for equal scores {"9": 0.5, "10": 0.5, "2": 0.5} the ranking is ["10", "2", "9"]: item "10" gets
  rank 1. `rank_by_score` and `top_k_rows` apply this rule; a ranking passed as a list is taken as already ordered.
* **Repeats in a ranking** (a generator may emit an item twice) count once, at their first position; later repeats
  are positions that hold no new item (they still use up a slot of the cut-off k). `duplicate_rate` measures them.
* **Empty cases.** An empty ranking scores 0 on every ranking metric. A query with an empty relevant set cannot be
  scored: ValueError (drop such queries before scoring; the protocols do). k must be >= 1. Means and rates over
  zero queries or zero generations raise ValueError instead of returning a number that looks like a result.
* recall@k = |relevant in top k| / |relevant| (not divided by min(k, |relevant|)); NDCG@k uses gain 1 and discount
  1/log2(rank + 1), ideal DCG from min(k, |relevant|) hits at the top; MRR is 1/rank of the first relevant item
  (0 if none), over the whole ranking unless k is given. These agree with ranx (checked in the tests).
* recall_at_k, hit_at_k, ndcg_at_k and reciprocal_rank are defined in retrieval/ranking.py (the dual encoder's
  validation and the sweep score with the same functions) and re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import numpy as np

# the per-query ranking metrics are defined once, in retrieval (the dual encoder validates with recall@k)
from dlsearch.retrieval.ranking import check_optional_k, hit_at_k, ndcg_at_k, recall_at_k, reciprocal_rank
from dlsearch.retrieval.shape import check_k

RANKING_METRICS = ("recall", "hit", "ndcg", "mrr")
_METRIC_RE = re.compile(r"^(recall|hit|ndcg|mrr)(?:@(\d+))?$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """'recall@10' -> ('recall', 10); 'mrr' -> ('mrr', None). ValueError for anything else."""
    m = _METRIC_RE.match(name.strip().lower())
    if m is None:
        raise ValueError(f"unknown metric {name!r}; use one of recall@K, hit@K, ndcg@K, mrr, mrr@K")
    kind, k = m.group(1), (int(m.group(2)) if m.group(2) else None)
    if k is None and kind != "mrr":
        raise ValueError(f"metric {name!r} needs a cut-off, e.g. {kind}@10")
    check_optional_k(k)
    return kind, k


_PER_QUERY = {"recall": recall_at_k, "hit": hit_at_k, "ndcg": ndcg_at_k, "mrr": reciprocal_rank}


def per_query_scores(
    rankings: Sequence[Sequence[str]], relevants: Sequence[Collection[str]], metric: str
) -> np.ndarray:
    """One score per query (float64 [n_queries]) for a metric named like 'recall@10', 'ndcg@10' or 'mrr'."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings but {len(relevants)} relevant sets; they must pair up one to one")
    if not rankings:
        raise ValueError("no queries to score")
    kind, k = parse_metric(metric)
    fn = _PER_QUERY[kind]
    out = np.empty(len(rankings), dtype=np.float64)
    for i, (ranking, rel) in enumerate(zip(rankings, relevants)):
        try:
            out[i] = fn(ranking, rel, k) if k is not None else fn(ranking, rel)
        except ValueError as e:
            raise ValueError(f"query {i}: {e}") from None
    return out


def mean_metric(rankings: Sequence[Sequence[str]], relevants: Sequence[Collection[str]], metric: str) -> float:
    """Mean over queries of a metric named like 'recall@10' (see per_query_scores)."""
    return float(per_query_scores(rankings, relevants, metric).mean())


def valid_item_rate(generated: Sequence[str | None], catalog_ids: Collection[str]) -> float:
    """Fraction of generated item ids (None = unparseable output) that name an item in the catalog."""
    if not generated:
        raise ValueError("no generations: the valid-item rate of nothing is undefined")
    ids = catalog_ids if isinstance(catalog_ids, (set, frozenset, dict)) else set(catalog_ids)
    return sum(1 for g in generated if g is not None and g in ids) / len(generated)


def duplicate_rate(rankings: Sequence[Sequence[str]]) -> float:
    """Fraction of all ranking entries that repeat an item already earlier in the same ranking."""
    total = sum(len(r) for r in rankings)
    if total == 0:
        raise ValueError("no ranking entries: the duplicate rate of nothing is undefined")
    return sum(len(r) - len(set(r)) for r in rankings) / total


def exact_match(generated: Sequence[str | None], expected: Sequence[str]) -> float:
    """Fraction of generations equal to the expected text after stripping outer whitespace (memorization)."""
    if len(generated) != len(expected):
        raise ValueError(f"{len(generated)} generations but {len(expected)} expected answers")
    if not expected:
        raise ValueError("no generations: exact match of nothing is undefined")
    return sum(1 for g, e in zip(generated, expected) if g is not None and g.strip() == e.strip()) / len(expected)


def id_tie_order(item_ids: Sequence[str]) -> np.ndarray:
    """int64 [n]: each item's position when the ids are sorted ascending as strings (the tie-break key)."""
    order = sorted(range(len(item_ids)), key=lambda i: item_ids[i])
    pos = np.empty(len(item_ids), dtype=np.int64)
    pos[order] = np.arange(len(item_ids), dtype=np.int64)
    return pos


def rank_by_score(item_ids: Sequence[str], scores: Sequence[float] | np.ndarray, k: int | None = None) -> list[str]:
    """Item ids ordered by score descending, equal scores by id ascending; only the top k if k is given."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(item_ids),):
        raise ValueError(f"scores have shape {s.shape}, expected ({len(item_ids)},) to match item_ids")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; a NaN has no place in a ranking")
    check_optional_k(k)
    order = np.lexsort((id_tie_order(item_ids), -s))  # last key is primary: score desc, then id asc
    if k is not None:
        order = order[:k]
    return [item_ids[i] for i in order]


def top_k_rows(scores: np.ndarray, k: int, tie_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top k catalog rows per query from a dense score matrix, in the search shape of every strategy.

    Args:
        scores: float [n_queries, n_items]; -inf marks an item that must not be returned (e.g. excluded).
        k: rows to keep per query (>= 1).
        tie_order: int64 [n_items] from `id_tie_order(catalog.ids)`: equal scores go to the smaller id first.
    Returns:
        (scores float32 [n_queries, k], rows int64 [n_queries, k]), best first, padded with -inf / -1.
    """
    check_k(k)
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != tie_order.shape[0]:
        raise ValueError(f"scores must be [n_queries, {tie_order.shape[0]}], got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_q, n_items = scores.shape
    out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
    out_r = np.full((n_q, k), -1, dtype=np.int64)
    kk = min(k, n_items)
    for q in range(n_q):
        row = scores[q]
        if kk < n_items:
            # every item scoring >= the kk-th largest score is a candidate, so boundary ties are all considered
            thresh = np.partition(row, n_items - kk)[n_items - kk]
            cand = np.flatnonzero(row >= thresh)
        else:
            cand = np.arange(n_items)
        cand = cand[np.isfinite(row[cand]) | (row[cand] > 0)]  # drop -inf (excluded), keep +inf
        order = cand[np.lexsort((tie_order[cand], -row[cand]))][:kk]
        out_s[q, : len(order)] = row[order]
        out_r[q, : len(order)] = order
    return out_s, out_r
