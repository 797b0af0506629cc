"""Synthetic catalog items whose attributes follow a real catalog's empirical distributions.

Used by the memorization-vs-size sweep beyond the 9,742 real MovieLens items (30k, 100k). Each synthetic item draws
independently, from the real catalog:
  * its genre set: a whole genre combination of a random real item (keeps the real co-occurrence of genres);
  * its number of tags from the real tags-per-item distribution, then the tags from the real tag frequencies;
  * its title: a word count from the real title-length distribution, words from the real title-word frequencies,
    and a year from the real year distribution ("Moon Station Crow (1994)");
titles are made unique against the real catalog and each other by redrawing. Ids are "syn<n>", never a real id.
Deterministic under the seed. Items carry meta {"synthetic": True}.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from dlsearch.data.catalog import Catalog, Item, normalize_title, split_title_year

_WORD_RE = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)


def _genres_and_tags(item: Item) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(genres, tags) of an item: meta['genres'] / meta['tags'] when the loader kept them, else all concepts as genres."""
    genres = item.meta.get("genres")
    tags = item.meta.get("tags")
    if isinstance(genres, (list, tuple)) and isinstance(tags, (list, tuple)):
        return tuple(genres), tuple(tags)
    return tuple(item.concepts), ()


class AttributeDistribution:
    """The empirical attribute distributions of a real catalog (the source of every synthetic draw)."""

    def __init__(self, catalog: Catalog):
        if len(catalog) == 0:
            raise ValueError("cannot learn attribute distributions from an empty catalog")
        self.genre_sets: list[tuple[str, ...]] = []
        tag_counts: Counter[str] = Counter()
        n_tags: list[int] = []
        word_counts: Counter[str] = Counter()
        n_words: list[int] = []
        years: list[int] = []
        for it in catalog:
            genres, tags = _genres_and_tags(it)
            self.genre_sets.append(genres)
            tag_counts.update(tags)
            n_tags.append(len(tags))
            base, year = split_title_year(it.title)
            words = _WORD_RE.findall(base)
            if words:
                word_counts.update(words)
                n_words.append(len(words))
            if year is not None:
                years.append(year)
        self.tags, tag_freq = (list(tag_counts), np.array(list(tag_counts.values()), dtype=np.float64)) if tag_counts else ([], np.ones(0))
        self.tag_cdf = np.cumsum(tag_freq) / tag_freq.sum() if len(tag_freq) else tag_freq
        self.n_tags = np.array(n_tags, dtype=np.int64)
        self.words = list(word_counts)
        wf = np.array(list(word_counts.values()), dtype=np.float64)
        self.word_cdf = np.cumsum(wf) / wf.sum()  # inverse-CDF sampling: O(log V) per draw, not O(V) like choice(p=)
        self.n_words = np.array(n_words or [2], dtype=np.int64)
        self.years = np.array(years, dtype=np.int64)
        self.real_titles = {normalize_title(it.title) for it in catalog}

    def summary(self) -> dict[str, int]:
        return {"genre_sets": len(set(self.genre_sets)), "tags": len(self.tags), "title_words": len(self.words), "years": len(set(self.years.tolist()))}


def _draw(cdf: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices drawn with the probabilities whose cumulative sums are `cdf`."""
    return np.minimum(np.searchsorted(cdf, rng.random(k), side="right"), len(cdf) - 1)


def synthetic_items(dist: AttributeDistribution, n: int, *, seed: int = 0, start: int = 0, taken_titles: set[str] | None = None) -> list[Item]:
    """`n` synthetic items with ids syn<start>..syn<start+n-1>, drawn from `dist` (see module docstring).

    `taken_titles` (normalized) is extended in place so consecutive calls stay unique; the draw for item i depends
    only on (seed, i), so a catalog of 100k items extends the 30k one (nested catalogs).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    taken = taken_titles if taken_titles is not None else set(dist.real_titles)
    items = []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        genres = dist.genre_sets[int(rng.integers(len(dist.genre_sets)))]
        k_tags = int(dist.n_tags[int(rng.integers(len(dist.n_tags)))]) if len(dist.tags) else 0
        tags = tuple(dict.fromkeys(dist.tags[j] for j in _draw(dist.tag_cdf, k_tags, rng))) if k_tags else ()
        for attempt in range(100):
            k_words = max(1, int(dist.n_words[int(rng.integers(len(dist.n_words)))]))
            words = [dist.words[j] for j in _draw(dist.word_cdf, k_words, rng)]
            year = int(dist.years[int(rng.integers(len(dist.years)))]) if len(dist.years) else None
            title = " ".join(w[:1].upper() + w[1:] for w in words) + (f" ({year})" if year is not None else "")
            key = normalize_title(title)
            if key not in taken:
                break
        else:  # pragma: no cover - 100 collisions in a row means a degenerate distribution
            raise ValueError(f"could not draw a unique title for synthetic item {i}; the source catalog is too small")
        taken.add(key)
        meta = {"synthetic": True, "genres": list(genres), "tags": list(tags)}
        items.append(Item(id=f"syn{i}", title=title, concepts=tuple(dict.fromkeys(genres + tags)), meta=meta))
    return items


def extend_with_synthetic(real: Catalog, size: int, *, seed: int = 0) -> Catalog:
    """The real catalog followed by synthetic items up to `size` items in total (nested across sizes)."""
    if size <= len(real):
        raise ValueError(f"size {size} is not larger than the real catalog ({len(real)}); use a nested subset instead")
    dist = AttributeDistribution(real)
    return Catalog(list(real) + synthetic_items(dist, size - len(real), seed=seed), source=f"{real.source}+synthetic")


def title_word_overlap(a: Sequence[Item], b: Sequence[Item]) -> float:
    """Share of b's title words that occur in a's titles (a sanity check that synthetic titles use real words)."""
    vocab = {w.lower() for it in a for w in _WORD_RE.findall(split_title_year(it.title)[0])}
    words = [w.lower() for it in b for w in _WORD_RE.findall(split_title_year(it.title)[0])]
    return sum(w in vocab for w in words) / max(1, len(words))


# A product-like catalog (issue 11, item 8): brand and product-line prefixes shared by many titles, '|' categories,
# and product variants listed under one title. tests/data/test_semantic_products.py and
# bench/bench_semantic_collisions.py measure semantic-id collisions and their memorization on it.
PRODUCT_BRANDS = ("Acme", "Lumina", "Northwind", "Brightway")
PRODUCT_LINES = ("ProLight", "Classic")
PRODUCTS = (("LED Bulb", "Home|Lighting|Bulbs"), ("Desk Lamp", "Home|Lighting|Lamps"), ("Floor Lamp", "Home|Lighting|Lamps"),
            ("Power Strip", "Electronics|Power"), ("USB Charger", "Electronics|Power|Chargers"), ("Extension Cord", "Electronics|Power"),
            ("Ceiling Fan", "Home|Climate|Fans"), ("Space Heater", "Home|Climate|Heaters"), ("Smoke Detector", "Home|Safety"),
            ("Door Bell", "Home|Safety|Smart Home"))
PRODUCT_SIZES = ("6 in", "8 in", "10 in", "12 in")
PRODUCT_COLORS = ("White", "Black", "Silver", "Bronze", "Soft White")


def product_catalog(variants: bool = True) -> Catalog:
    """4 brands x 2 lines x 10 products x 4 sizes x 5 colors = 1,600 items "B0-00000".., '|'-separated categories.
    With variants, items n = 1, 2 (mod 10) repeat the title and categories of item n - n % 10 (variants listed under
    one title: 480 items in 160 groups of three identical texts)."""
    import itertools

    rows = [(f"{b} {l} {p} {s}, {c}", cats) for b, l, (p, cats), s, c
            in itertools.product(PRODUCT_BRANDS, PRODUCT_LINES, PRODUCTS, PRODUCT_SIZES, PRODUCT_COLORS)]
    items = []
    for n, (title, cats) in enumerate(rows):
        if variants and n % 10 in (1, 2):
            title, cats = rows[n - n % 10]
        items.append(Item(f"B0-{n:05d}", title, concepts=tuple(cats.split("|"))))
    return Catalog(items)
