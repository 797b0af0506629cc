"""Per-query ranking metrics (recall@k, hit@k, NDCG@k, MRR): their one definition.

They live here, in the lowest layer that needs them: the dual encoder validates with recall@k while it trains, and
retrieval may not import evaluation. `dlsearch.evaluation.metrics` re-exports them with the rest of the metrics and
states the conventions (ties, repeats, empty cases). Items are anything hashable: item ids (str) in evaluation,
catalog rows (int) in the dual encoder's validation and the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence

from dlsearch.retrieval.shape import check_k


def check_optional_k(k: int | None) -> None:
    """None (the whole ranking) or a valid cut-off."""
    if k is not None:
        check_k(k)


def _relevant_set(relevant: Collection[Hashable]) -> set[Hashable]:
    rel = set(relevant)
    if not rel:
        raise ValueError("query has no relevant items; it cannot be scored (drop it before scoring)")
    return rel


def _first_occurrences(ranking: Sequence[Hashable], k: int | None) -> list[tuple[int, Hashable]]:
    """(0-based position, item) for the first occurrence of each item within the top k positions."""
    seen: set[Hashable] = set()
    out = []
    for pos, item in enumerate(ranking if k is None else ranking[:k]):
        if item not in seen:
            seen.add(item)
            out.append((pos, item))
    return out


def recall_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Fraction of the relevant items found in the top k positions (|relevant in top k| / |relevant|)."""
    check_k(k)
    rel = _relevant_set(relevant)
    return sum(1 for _, it in _first_occurrences(ranking, k) if it in rel) / len(rel)


def hit_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """1.0 if any relevant item is in the top k positions, else 0.0."""
    check_k(k)
    rel = _relevant_set(relevant)
    return 1.0 if any(it in rel for _, it in _first_occurrences(ranking, k)) else 0.0


def ndcg_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Binary-gain NDCG@k: sum of 1/log2(rank+1) over relevant hits, divided by the ideal for min(k, |relevant|)."""
    check_k(k)
    rel = _relevant_set(relevant)
    dcg = sum(1.0 / math.log2(pos + 2) for pos, it in _first_occurrences(ranking, k) if it in rel)
    ideal = sum(1.0 / math.log2(pos + 2) for pos in range(min(k, len(rel))))
    return dcg / ideal


def reciprocal_rank(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int | None = None) -> float:
    """1/rank of the first relevant item (within the top k if k is given), 0.0 if there is none."""
    check_optional_k(k)
    rel = _relevant_set(relevant)
    for pos, it in _first_occurrences(ranking, k):
        if it in rel:
            return 1.0 / (pos + 1)
    return 0.0
