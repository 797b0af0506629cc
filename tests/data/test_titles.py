"""data/titles.py: normalization's one home, duplicate groups on the real ReDial movie list, title lookups, and the
exclusion helpers every strategy's results go through."""

from __future__ import annotations

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.redial import load_redial
from dlsearch.data.titles import normalize_title, title_words, titles_of, work_key


@pytest.fixture(scope="module")
def redial():
    return load_redial()[0]


def test_normalization_has_one_home():
    from dlsearch.data import catalog, titles

    assert catalog.normalize_title is titles.normalize_title and catalog.split_title_year is titles.split_title_year
    assert title_words("Spider-Man: Homecoming") == "spider man homecoming" and title_words("Amélie") == "amelie"
    assert work_key("Matrix, The (1999)") == ("the matrix", 1999) and work_key("The Matrix ") == ("the matrix", None)
    assert normalize_title("Police Academy  (1984)") == "police academy (1984)"


def test_redial_duplicate_groups(redial):
    t = titles_of(redial)
    assert t.group("140395") == ("85036", "140395")  # "The Matrix " joins "The Matrix (1999)", the dated one first
    assert t.group("85036") == t.group("140395")
    assert set(t.group("151656")) == {"151656", "81006"}  # "Police Academy  (1984)" / "Police Academy "
    # several years for one title: a yearless entry cannot be placed, every dated film stays its own work
    halloweens = [it for it in redial if work_key(it.title)[0] == "halloween"]
    assert len({work_key(it.title)[1] for it in halloweens}) > 1
    assert all(len(t.group(it.id)) == 1 for it in halloweens if work_key(it.title)[1] is not None)
    assert titles_of(redial) is t  # cached per catalog object


def test_dataset_links_join_groups():
    cat = Catalog([Item("a", "Léon (1994)", meta={"movielens_ids": ["293"]}),
                   Item("b", "The Professional (1994)", meta={"movielens_ids": ["293"]}),
                   Item("c", "Heat (1995)"), Item("d", "Heat (1986)"), Item("e", "Heat")])
    t = titles_of(cat)
    assert t.group("a") == ("a", "b") and t.group("e") == ("e",)  # two Heats: the yearless one stays alone
    assert t.excluded_ids(["b"]) == {"a", "b"}


def test_keep_drops_excluded_groups_and_repeats(redial):
    t = titles_of(redial)
    rows = [redial.index(i) for i in ("140395", "85036", "151656", "81006")] + [-1, redial.index("111776")]
    assert t.keep(rows) == [0, 2, 5]
    assert t.keep(rows, t.excluded_rows(["85036"])) == [2, 5]
    assert t.keep_ids(["140395", "not-an-id", "85036"], ["151656"]) == [0, 1]


def test_lookup(redial):
    t = titles_of(redial)
    assert t.lookup("the matrix") == [("85036", 0)] and t.lookup("Matrix, The (1999)") == [("85036", 0)]
    assert t.lookup("The Matrx") == [("85036", 1)]
    assert t.lookup("Headhuntr (2009)")[0][0] == "75796"
    assert t.lookup("zzzz qqqq xxxx") == [] and t.lookup("Upp") == []  # short titles: exact only
