"""Loaders on the real shipped ReDial and MovieLens files."""

from dlsearch.data.formats import mention_ids
from dlsearch.data.linking import title_keys


def test_movielens_catalog_and_histories(movielens):
    cat, hist = movielens
    assert len(cat) == 9742 and len(hist) == 610
    assert sum(len(v) for v in hist.values()) == 100836
    toy = cat["1"]
    assert toy.title == "Toy Story (1995)" and toy.concepts[:5] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert "pixar" in toy.concepts  # tags follow genres
    assert all("(no genres listed)" not in it.concepts for it in cat)
    for events in hist.values():
        assert [t for _, t in events] == sorted(t for _, t in events)
    cold = [it for it in cat if it.meta["cold_start"]]
    assert cold, "cold-start items are kept and flagged"
    for it in cold:
        assert ("no_concepts" in it.meta["cold_start"]) == (not it.concepts)
        assert ("no_ratings" in it.meta["cold_start"]) == (it.meta["n_ratings"] == 0)


def test_redial_catalog_dialogues_and_links(redial):
    cat, dialogues = redial
    assert len(cat) == 6924 and len(dialogues) == 1342
    assert sum(len(d.messages) for d in dialogues) == 23952
    assert cat["151656"].title == "Police Academy  (1984)"  # original title kept, double space and all
    assert cat["151656"].meta["nbMentions"] > 0
    linked = [it for it in cat if it.meta["linked"]]
    assert 3500 <= len(linked) <= 3900  # README: about 3,588 of 6,924
    assert all(it.concepts for it in linked if not it.meta["cold_start"])
    assert all(it.meta["cold_start"] == ["no_concepts"] for it in cat if not it.concepts)  # kept, flagged
    assert len(cat) - len(linked) > 3000  # unlinked items are kept too
    assert "Comedy" in cat["111776"].concepts  # Super Troopers (2001)
    d0 = dialogues[0]
    assert d0.id == "20001" and d0.messages[0].role == "user" and d0.messages[1].role == "assistant"
    assert d0.meta["respondentQuestions"]["91481"] == {"suggested": 1, "seen": 2, "liked": 2}
    assert all(m in cat for d in dialogues for msg in d.messages for m in mention_ids(msg.content))


def test_title_keys():
    assert title_keys("Matrix, The (1999)") == ["the matrix (1999)"]
    assert title_keys("Men in Black (a.k.a. MIB) (1997)") == ["men in black (a.k.a. mib) (1997)", "men in black (1997)", "mib (1997)"]
    assert title_keys("The Mummy ") == []  # no year: never matched
