"""Session fixtures over the real MovieLens catalog: embeddings (cached on disk under .cache/ — ignored by git — or
$DLSEARCH_CACHE_DIR, so only the first run embeds the 9,742 items) and the two expensive id maps, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# $DLSEARCH_CACHE_DIR lets CI keep the cache between runs (a fresh cache costs ~150 s CPU of embedding)
EMBEDDING_CACHE = (Path(os.environ["DLSEARCH_CACHE_DIR"]) if os.environ.get("DLSEARCH_CACHE_DIR")
                   else Path(__file__).resolve().parents[2] / ".cache") / "embeddings"


@pytest.fixture(scope="session")
def movielens():
    from dlsearch.data.movielens import load_movielens

    return load_movielens()


@pytest.fixture(scope="session")
def redial():
    from dlsearch.data.redial import load_redial

    return load_redial()


@pytest.fixture(scope="session")
def ml_embeddings(movielens):
    from dlsearch.data.semantic_ids import item_embeddings

    return item_embeddings(movielens[0], cache_dir=EMBEDDING_CACHE)


@pytest.fixture(scope="session")
def semantic_map(movielens, ml_embeddings):
    from dlsearch.data.ids import build_idmap

    return build_idmap(movielens[0], "semantic", seed=0, embeddings=ml_embeddings)  # the default configuration


@pytest.fixture(scope="session")
def collaborative_map(movielens, ml_embeddings):
    from dlsearch.data.ids import build_idmap

    catalog, histories = movielens
    return build_idmap(catalog, "collaborative", seed=0, histories=histories, embeddings=ml_embeddings)


@pytest.fixture(scope="session")
def embedding_cache() -> Path:
    return EMBEDDING_CACHE
