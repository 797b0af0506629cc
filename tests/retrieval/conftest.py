"""Fixtures for retrieval tests: small catalogs built from the bundled real data (MovieLens movies + tags)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from dlsearch.data.catalog import Catalog, Item

REPO = Path(__file__).resolve().parents[2]
ML = REPO / "data" / "datasets" / "movielens-latest-small"
# One intra-op thread: on this shared 2-core machine (load ~10) two torch threads spin-wait for each other and a
# 10 s training test takes 50 s; with one thread it takes 10 s.
torch.set_num_threads(1)

N_ITEMS = 400  # enough for lexical/semantic neighbours to be meaningful, small enough to embed in seconds


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


N_DIALOGUES = 60  # ReDial dialogues in the real-data sample (~250 mentioned movies)


def recommender_turns(dialogues):
    """Per-turn conversations as `dlsearch data prepare` writes them: context before an assistant turn that
    mentions movies not mentioned before; targets = those movies. (Test stand-in until data.splits lands.)"""
    from dlsearch.data.formats import mention_ids, Conversation

    out = []
    for d in dialogues:
        seen: list[str] = []
        for t, m in enumerate(d.messages):
            ids = list(dict.fromkeys(mention_ids(m.content)))
            new = [i for i in ids if i not in seen]
            if m.role == "assistant" and new and t > 0:
                out.append(Conversation(f"{d.id}:{t}", d.messages[:t], exclude=list(seen), targets=new))
            seen.extend(i for i in ids if i not in seen)
    return out


@pytest.fixture(scope="session")
def redial_sample():
    """(catalog of the movies mentioned in the first N_DIALOGUES dialogues, their recommender turns)."""
    from dlsearch.data.formats import mention_ids
    from dlsearch.data.redial import load_redial

    catalog, dialogues = load_redial()
    dialogues = dialogues[:N_DIALOGUES]
    ids = dict.fromkeys(i for d in dialogues for m in d.messages for i in mention_ids(m.content))
    return catalog.subset(ids), recommender_turns(dialogues)


@pytest.fixture(scope="session")
def redial_data():
    """The bundled ReDial movies and dialogues, loaded once: the mention tests share its catalog, and with it the
    linker that `linker_for` caches per catalog (building it takes seconds)."""
    from dlsearch.data.redial import load_redial

    return load_redial()
