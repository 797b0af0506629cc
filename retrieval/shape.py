"""The one search shape every strategy returns, and helpers to build and check it.

    search(queries, k) -> (scores, rows)
    scores: np.ndarray float32 [n_queries, k], best first, padded with -inf
    rows:   np.ndarray int64   [n_queries, k], Catalog row indices (`catalog.index(item_id)`), padded with -1

Item ids and `Prediction`s are produced only at the edges (CLI, router output) by `to_predictions`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Prediction, ScoredItem

PAD_SCORE = float("-inf")
PAD_ROW = -1


def empty_result(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-padding result of shape [n, k]."""
    return np.full((n, k), PAD_SCORE, dtype=np.float32), np.full((n, k), PAD_ROW, dtype=np.int64)


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def check_result(scores: np.ndarray, rows: np.ndarray, n: int, k: int) -> None:
    """Internal invariant of every strategy: shapes, dtypes, padding consistent, sorted best first."""
    assert scores.dtype == np.float32 and rows.dtype == np.int64, (scores.dtype, rows.dtype)
    assert scores.shape == (n, k) and rows.shape == (n, k), (scores.shape, rows.shape, n, k)
    assert np.array_equal(rows == PAD_ROW, np.isneginf(scores)), "padding of scores and rows disagrees"
    if k > 1:
        finite = np.where(np.isneginf(scores), np.finfo(np.float32).min, scores).astype(np.float64)
        assert np.all(np.diff(finite, axis=1) <= 1e-5), "not sorted best first"


def topk_from_lists(results: Sequence[Sequence[tuple[int, float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack per-query (row, score) lists (any order, no duplicates) into the padded search shape."""
    scores, rows = empty_result(len(results), k)
    for i, hits in enumerate(results):
        best = sorted(hits, key=lambda h: (-h[1], h[0]))[:k]
        for j, (row, score) in enumerate(best):
            rows[i, j], scores[i, j] = row, score
    return scores, rows


def to_predictions(
    ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, catalog: Catalog, strategy: str | Sequence[Sequence[str]]
) -> list[Prediction]:
    """Convert a search result into `Prediction`s (padding dropped). `strategy` is one name for all, or per cell."""
    out = []
    for i, pid in enumerate(ids):
        items = []
        for j in range(rows.shape[1]):
            r = int(rows[i, j])
            if r == PAD_ROW:
                continue
            name = strategy if isinstance(strategy, str) else strategy[i][j]
            items.append(ScoredItem(catalog.items[r].id, float(scores[i, j]), len(items) + 1, name))
        out.append(Prediction(pid, items))
    return out


def rows_to_ids(rows: Iterable[int], catalog: Catalog) -> list[str]:
    return [catalog.items[int(r)].id for r in rows if int(r) != PAD_ROW]
