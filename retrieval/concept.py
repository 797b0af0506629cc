"""Concept-based search: a list of concepts (genres, tags, moods) -> items whose text is closest in embedding space.

    index = build_concept_index(catalog, factory="auto", cache_dir=".cache/embeddings")
    search = ConceptSearch(index, aggregate="mean")      # or "weighted" (rarer concepts count more) or "rrf"
    scores, rows = search.search([["sci-fi", "robots", "funny"]], k=10)

Concepts come from the fine-tuned model's `conversation->concepts` task (free text, or constrained to the catalog's
concept vocabulary with the decoding trie), from `snap_to_vocabulary` (nearest vocabulary concept by embedding),
or from the caller. Aggregation:
  mean      one query vector = normalised mean of the concept vectors; one search.
  weighted  as mean, each concept weighted by idf = log(1 + n_items / (1 + items having it)) from the catalog's
            vocabulary (concepts outside the vocabulary get the largest idf), or by caller-given weights.
  rrf       one search per concept, fused with reciprocal rank fusion; keeps items that match one concept strongly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.retrieval.ann import AnnIndex, build_ann
from dlsearch.retrieval.embedding import embed_items, embed_texts, encoder_info
from dlsearch.retrieval.fusion import rrf
from dlsearch.retrieval.shape import check_k, check_result, empty_result

AGGREGATES = ("mean", "weighted", "rrf")
VOCAB_FILE = "concepts.json"


def concept_vocabulary(catalog: Catalog) -> dict[str, int]:
    """concept (lowercased, stripped) -> number of items that have it."""
    counts: Counter[str] = Counter()
    for it in catalog:
        counts.update({c.strip().lower() for c in it.concepts if c.strip()})
    return dict(counts)


def build_concept_index(
    catalog: Catalog,
    *,
    factory: str = "auto",
    params: dict[str, Any] | None = None,
    encoder: Any = None,
    encoder_path: str | None = None,
    cache_dir: str | None = None,
    show_progress: bool = False,
) -> AnnIndex:
    """Embed every item's text (cached) and index it; the manifest names the catalog and encoder."""
    from dlsearch.data.encoder import load_encoder

    enc = encoder if encoder is not None else load_encoder(encoder_path)
    vecs = embed_items(catalog, encoder=enc, cache_dir=cache_dir, show_progress=show_progress)  # [n, d]
    meta = {"kind": "concept", "catalog_hash": catalog.content_hash(), "n_items": len(catalog), **encoder_info(enc, encoder_path)}
    index = build_ann(vecs, factory, params=params, meta=meta)
    index.vocabulary = concept_vocabulary(catalog)  # type: ignore[attr-defined]
    return index


def save_concept_index(index: AnnIndex, out_dir: str | Path) -> Path:
    out = index.save(out_dir)
    (out / VOCAB_FILE).write_text(json.dumps(getattr(index, "vocabulary", {}), ensure_ascii=False, sort_keys=True))
    return out


def load_concept_index(index_dir: str | Path, catalog: Catalog | None = None) -> AnnIndex:
    index = AnnIndex.load(index_dir)
    if index.manifest.get("kind") not in ("concept", "dual"):
        raise ValueError(f"{index_dir}: manifest kind {index.manifest.get('kind')!r} is not a concept index")
    if catalog is not None and index.manifest.get("catalog_hash") != catalog.content_hash():
        raise ValueError(f"{index_dir}: built for another catalog version ({index.manifest.get('catalog_hash', '?')[:12]}); rebuild it")
    vocab_path = Path(index_dir) / VOCAB_FILE
    index.vocabulary = json.loads(vocab_path.read_text()) if vocab_path.exists() else {}  # type: ignore[attr-defined]
    return index


class ConceptSearch:
    """Search an item-text index with concept lists; `search(list_of_concept_lists, k)` has the search shape."""

    name = "concept"

    def __init__(
        self,
        index: AnnIndex,
        *,
        aggregate: str = "mean",
        vocabulary: dict[str, int] | None = None,
        encoder: Any = None,
        cache_dir: str | None = None,
        rrf_k: float = 60.0,
        per_concept_k: int = 100,
    ):
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown concept aggregate {aggregate!r}; choose one of {AGGREGATES}")
        self.index, self.aggregate, self.encoder, self.cache_dir = index, aggregate, encoder, cache_dir
        self.vocabulary = vocabulary if vocabulary is not None else getattr(index, "vocabulary", {})
        self.n_items = max(len(index), 1)
        self.rrf_k, self.per_concept_k = rrf_k, per_concept_k

    def idf(self, concept: str) -> float:
        df = self.vocabulary.get(concept.strip().lower(), 0)
        return math.log(1.0 + self.n_items / (1.0 + df))

    def search(
        self, queries: Sequence[Sequence[str]], k: int, *, weights: Sequence[Sequence[float]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k catalog rows for each concept list.

        Args:
            queries: one list of concept strings per query (an empty list gives all padding).
            k: results per query.
            weights: optional per-concept weights (same nesting as queries); used by "weighted".
        Returns:
            (scores float32 [n, k], rows int64 [n, k]) padded with -inf / -1.
        """
        if isinstance(queries, str) or any(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a list of concept lists, e.g. [['comedy', 'heist']]")
        k = check_k(k)
        n = len(queries)
        scores, rows = empty_result(n, k)
        clean = [[c.strip() for c in q if c and c.strip()] for q in queries]
        flat = sorted({c for q in clean for c in q})
        if not flat:
            return scores, rows
        vec = dict(zip(flat, embed_texts(flat, encoder=self.encoder, cache_dir=self.cache_dir)))  # concept -> [d]
        live = [i for i, q in enumerate(clean) if q]
        if self.aggregate == "rrf":
            for i in live:
                per = self.index.search(np.stack([vec[c] for c in clean[i]]), max(k, self.per_concept_k))  # [c, k']
                lists = [(per[0][j : j + 1], per[1][j : j + 1]) for j in range(len(clean[i]))]
                s, r, _ = rrf(lists, k, rrf_k=self.rrf_k)
                scores[i], rows[i] = s[0], r[0]
        else:
            qv = []
            for i in live:
                m = np.stack([vec[c] for c in clean[i]])  # [c, d]
                if self.aggregate == "weighted":
                    w = np.asarray(weights[i], dtype=np.float32) if weights is not None else np.array([self.idf(c) for c in clean[i]], dtype=np.float32)
                    if w.shape != (len(clean[i]),):
                        raise ValueError(f"query {i}: {len(clean[i])} concepts but {w.shape} weights")
                else:
                    w = np.ones(len(clean[i]), dtype=np.float32)
                qv.append((w[:, None] * m).sum(0) / max(float(w.sum()), 1e-9))
            s, r = self.index.search(np.stack(qv).astype(np.float32), k)
            scores[live], rows[live] = s, r
        check_result(scores, rows, n, k)
        return scores, rows


def snap_to_vocabulary(
    concepts: Sequence[str], vocabulary: Sequence[str], *, min_similarity: float = 0.6, encoder: Any = None, cache_dir: str | None = None
) -> list[str]:
    """Map freely generated concepts to the nearest vocabulary concept (cosine >= min_similarity), dropping the
    rest; exact (case-insensitive) matches are kept as they are. Order kept, duplicates removed."""
    vocab = sorted(set(vocabulary))
    if not vocab or not concepts:
        return []
    lower = {v.lower(): v for v in vocab}
    todo = [c for c in concepts if c.strip().lower() not in lower]
    nearest: dict[str, str] = {}
    if todo:
        vv = embed_texts(vocab, encoder=encoder, cache_dir=cache_dir)  # [V, d]
        cv = embed_texts(todo, encoder=encoder, cache_dir=cache_dir)  # [c, d]
        sims = cv @ vv.T
        for c, row in zip(todo, sims):
            j = int(row.argmax())
            if row[j] >= min_similarity:
                nearest[c] = vocab[j]
    out: dict[str, None] = {}
    for c in concepts:
        hit = lower.get(c.strip().lower()) or nearest.get(c)
        if hit:
            out.setdefault(hit, None)
    return list(out)
