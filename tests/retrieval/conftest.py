"""Fixtures for retrieval tests: small catalogs built from the bundled real data (MovieLens movies + tags)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from data.catalog import Catalog, Item

REPO = Path(__file__).resolve().parents[2]
ML = REPO / "data" / "datasets" / "movielens-latest-small"
N_ITEMS = 600  # enough for lexical/semantic neighbours to be meaningful, small enough to embed in seconds


def movielens_catalog(n: int | None = N_ITEMS) -> Catalog:
    """The first n MovieLens movies; concepts = genres + user tags (the foundation loader's rendering)."""
    tags: dict[str, list[str]] = defaultdict(list)
    with open(ML / "tags.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["tag"] not in tags[r["movieId"]]:
                tags[r["movieId"]].append(r["tag"])
    items = []
    with open(ML / "movies.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            genres = [g for g in r["genres"].split("|") if g != "(no genres listed)"]
            items.append(Item(r["movieId"], r["title"], concepts=tuple(genres + tags[r["movieId"]][:5])))
            if n is not None and len(items) >= n:
                break
    return Catalog(items, source=str(ML / "movies.csv"))


@pytest.fixture(scope="session")
def ml_catalog() -> Catalog:
    return movielens_catalog()


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory) -> str:
    """One embedding cache for the session: each text is embedded once across tests."""
    return str(tmp_path_factory.mktemp("embeddings"))
