"""The baselines every evaluation table carries: training-split popularity and BM25 over the conversation text.

Both return the shared search shape: `search(queries, k) -> (scores float32 [n, k], rows int64 [n, k])`, catalog
row indices best first, padded with -inf / -1, ties broken by item id ascending (evaluation.metrics.top_k_rows).

Popularity is counted from the training split only — never from ReDial's `nbMentions`, which counts mentions over
all of ReDial including the dialogues we test on (a leak that would flatter the baseline).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.evaluation.metrics import id_tie_order
from dlsearch.retrieval.embedding import conversation_text  # the one query text of BM25 and the encoders


def training_counts(train: Iterable[Conversation]) -> Counter[str]:
    """How often each item is a target in the training records (a recommender-turn mention / a held interaction)."""
    counts: Counter[str] = Counter()
    for conv in train:
        counts.update(conv.targets)
    return counts


class PopularitySearch:
    """Rank every query's candidates by training-split popularity (the same ranking for every query)."""

    name = "popularity"

    def __init__(self, catalog: Catalog, counts: Mapping[str, int]):
        unknown = [i for i in counts if i not in catalog]
        if unknown:
            raise ValueError(f"{len(unknown)} counted items are not in the catalog (e.g. {unknown[:3]}); count on the same catalog")
        self.catalog = catalog
        self.scores = np.array([float(counts.get(i, 0)) for i in catalog.ids], dtype=np.float64)  # [n_items]
        self.tie_order = id_tie_order(catalog.ids)
        self._order = np.lexsort((self.tie_order, -self.scores))  # full ranking once: queries only differ in k

    def search(self, queries: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, len(self._order))
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows[:, :kk] = self._order[:kk]
        scores[:, :kk] = self.scores[self._order[:kk]]
        return scores, rows


class BM25Search:
    """BM25 from the conversation text (mentions rendered as titles) to each item's text: retrieval/bm25.py's index.

    The index breaks equal scores by catalog row; results are re-ordered here so equal scores go by item id
    ascending (the tie rule of every evaluation table). Items sharing no word with the conversation are not ranked.
    """

    name = "bm25"

    def __init__(self, catalog: Catalog, *, max_messages: int | None = None):
        from dlsearch.retrieval.bm25 import build_bm25  # retrieval area: the one BM25 implementation

        self.catalog = catalog
        self.max_messages = max_messages
        self.tie_order = id_tie_order(catalog.ids)
        self.index = build_bm25(catalog)

    def search(self, queries: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        texts = [conversation_text(q, self.catalog, max_messages=self.max_messages) for q in queries]
        scores, rows = self.index.search(texts, k)  # [n, k] each, padded with -inf / -1
        for n in range(len(queries)):
            valid = rows[n] >= 0
            s, r = scores[n][valid], rows[n][valid]
            order = np.lexsort((self.tie_order[r], -s))
            scores[n, : len(r)], rows[n, : len(r)] = s[order], r[order]
        return scores, rows
