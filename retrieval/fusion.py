"""Reciprocal rank fusion (Cormack et al., SIGIR 2009) over results in the search shape.

    scores, rows, sources = rrf([(s1, r1), (s2, r2)], k=10, weights=[1.0, 0.5])

An item's fused score is sum_s w_s / (rrf_k + rank_s) over the lists s that return it (rank from 1). RRF needs no
score calibration between engines (BM25 scores and cosines live on different scales), which is why the router uses
it. `sources[i][j]` lists the indices of the input lists that contributed to cell (i, j), largest contribution first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dlsearch.retrieval.shape import check_k, check_result, empty_result

RRF_K = 60  # the constant from Cormack et al.; damps the weight of the very top ranks


def rrf(
    results: Sequence[tuple[np.ndarray, np.ndarray]],
    k: int,
    *,
    rrf_k: float = RRF_K,
    weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[list[int]]]]:
    """Fuse ranked lists query by query.

    Args:
        results: one (scores, rows) per strategy, all with the same number of queries (k may differ).
        k: results kept per query.
        rrf_k: rank offset.
        weights: one weight per strategy (default 1).
    Returns:
        (scores float32 [n, k], rows int64 [n, k], sources) with ties broken by row.
    """
    k = check_k(k)
    if not results:
        raise ValueError("rrf needs at least one result list")
    n = results[0][1].shape[0]
    if any(r.shape[0] != n for _, r in results):
        raise ValueError(f"all result lists must have the same number of queries, got {[r.shape[0] for _, r in results]}")
    weights = [1.0] * len(results) if weights is None else list(weights)
    if len(weights) != len(results):
        raise ValueError(f"{len(weights)} weights for {len(results)} result lists")
    scores, rows = empty_result(n, k)
    sources: list[list[list[int]]] = []
    for i in range(n):
        fused: dict[int, float] = {}
        parts: dict[int, list[tuple[float, int]]] = {}
        for s, ((_, r), w) in enumerate(zip(results, weights)):
            for rank, row in enumerate(r[i], start=1):
                if row < 0:
                    continue
                c = w / (rrf_k + rank)
                fused[int(row)] = fused.get(int(row), 0.0) + c
                parts.setdefault(int(row), []).append((c, s))
        best = sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:k]
        src_i = []
        for j, (row, sc) in enumerate(best):
            rows[i, j], scores[i, j] = row, sc
            src_i.append([s for _, s in sorted(parts[row], key=lambda p: (-p[0], p[1]))])
        sources.append(src_i)
    check_result(scores, rows, n, k)
    return scores, rows, sources
