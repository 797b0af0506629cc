"""The mention linker's learned context filter (retrieval/mention_filter.py): loads from its JSON (never a pickle),
refuses a file it cannot use, scores the same in every process, and on real ReDial dev messages drops links the
rules accepted wrongly while keeping titles typed as films."""

from __future__ import annotations

import json
import pytest

from dlsearch.data.titles import normalize_title
from dlsearch.retrieval.mention_filter import FEATURES, FILTER_JSON, load_filter
from dlsearch.retrieval.mentions import MentionLinker, linker_for


@pytest.fixture(scope="module")
def catalog(redial_data):
    return redial_data[0]


@pytest.fixture(scope="module")
def linker(catalog):
    return linker_for(catalog)  # the production path: the shipped filter


def _titles(linker, text, prefer=()):
    return [normalize_title(linker.catalog[m.item_id].title) for m in linker.find(text, prefer=prefer)]


def test_the_shipped_filter_loads_from_json_with_its_training_command():
    filt = load_filter()
    rec = json.loads(FILTER_JSON.read_text())
    assert filt.features == FEATURES and len(filt.weights) == len(FEATURES)
    assert rec["command"].startswith("python bench/train_mention_filter.py")
    assert 0.0 <= filt.threshold < 1.0 and "held-out (odd) never read" in rec["trained_on"]


@pytest.mark.parametrize("change, field", [(lambda r: r.pop("weights"), "weights"),
                                           (lambda r: r["mean"].pop(), "mean"),
                                           (lambda r: r["features"].__setitem__(0, "shoe_size"), "features"),
                                           (lambda r: r["scale"].__setitem__(0, 0.0), "scale")])
def test_a_filter_file_it_cannot_use_is_refused_naming_file_and_field(tmp_path, change, field):
    rec = json.loads(FILTER_JSON.read_text())
    change(rec)
    path = tmp_path / "filter.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"filter.json.*'{field}'"):
        load_filter(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="filter.json"):
        load_filter(path)


def test_the_filter_is_deterministic(linker, catalog):
    """Same file, same scores; the features of a link are the same on a fresh linker (no cache or order effect)."""
    text = "I liked Batman and the Joker, also The Dark Knight and rush hour"
    rec1: list = []
    rec2: list = []
    linker.find(text, record=rec1)
    fresh = MentionLinker(catalog, filter=load_filter())
    assert fresh.find(text, record=rec2) == linker.find(text)
    assert [(m, f) for m, f, _ in rec1] == [(m, f) for m, f, _ in rec2] and rec1
    assert load_filter() == load_filter()
    assert [load_filter().score(f) for _, f, _ in rec1] == [linker.filter.score(f) for _, f, _ in rec2]


def test_real_dev_false_links_are_dropped_and_typed_films_kept(linker, catalog):
    """ReDial dev (even-numbered dialogues) messages without mentions where the rules alone link a title that is
    not said as a film; and titles typed as films, which the filter keeps."""
    rules = MentionLinker(catalog)
    for text in DROPPED:
        assert rules.find(text), text  # the rules link it ...
        assert linker.find(text) == [], text  # ... the filter drops it
    assert _titles(linker, "I loved The Matrix and Inception, what else?") == ["the matrix (1999)", "inception (2010)"]
    assert _titles(linker, "They loved Toy Story and Finding Nemo") == ["toy story (1995)", "finding nemo (2003)"]
    assert _titles(linker, "Have you seen Heat (1995)?") == ["heat (1995)"]
    assert _titles(linker, "did you watch click ?") == ["click (2006)"]
    assert _titles(linker, "i also loved the dark knihgt rises") == ["the dark knight rises (2012)"]


# The one dev false link (of 40) the shipped filter drops (ReDial dialogue 22487, message 14, dev half; "@91327"
# removed as the protocol does): a place, not the film Hollywood (1923). The other 39 score above the threshold,
# which the recall budget held down (docs/retrieval.md, "Mention linking").
DROPPED = ("  is about a kitty who takes off to Hollywood and tries to make it big in the movies.  Like, old Hollywood.  "
           "It's fun.",)
