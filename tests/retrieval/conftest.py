"""Fixtures for retrieval tests: small catalogs built from the bundled real data (MovieLens movies + tags)."""

from __future__ import annotations

import pytest
import torch

from dlsearch.data.catalog import Catalog
from dlsearch.data.movielens import load_movielens

# One intra-op thread: on this shared 2-core machine (load ~10) two torch threads spin-wait for each other and a
# 10 s training test takes 50 s; with one thread it takes 10 s.
torch.set_num_threads(1)

N_ITEMS = 400  # enough for lexical/semantic neighbours to be meaningful, small enough to embed in seconds


def movielens_catalog(n: int | None = N_ITEMS) -> Catalog:
    """The first n MovieLens movies, loaded by the production loader (concepts = genres + distinct user tags)."""
    catalog, _ = load_movielens()
    return catalog if n is None else catalog.subset(catalog.ids[:n])


@pytest.fixture(scope="session")
def ml_catalog() -> Catalog:
    return movielens_catalog()


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory) -> str:
    """One embedding cache for the session: each text is embedded once across tests."""
    return str(tmp_path_factory.mktemp("embeddings"))


N_DIALOGUES = 60  # ReDial dialogues in the real-data sample (~250 mentioned movies)


@pytest.fixture(scope="session")
def redial_sample():
    """(catalog of the movies mentioned in the first N_DIALOGUES dialogues, their recommender turns as
    `dlsearch data prepare` cuts them: data.turns)."""
    from dlsearch.data.formats import mention_ids
    from dlsearch.data.redial import load_redial
    from dlsearch.data.turns import all_recommender_turns

    catalog, dialogues = load_redial()
    dialogues = dialogues[:N_DIALOGUES]
    ids = dict.fromkeys(i for d in dialogues for m in d.messages for i in mention_ids(m.content))
    return catalog.subset(ids), all_recommender_turns(dialogues)


@pytest.fixture(scope="session")
def redial_data():
    """The bundled ReDial movies and dialogues, loaded once: the mention tests share its catalog, and with it the
    linker that `linker_for` caches per catalog (building it takes seconds)."""
    from dlsearch.data.redial import load_redial

    return load_redial()
