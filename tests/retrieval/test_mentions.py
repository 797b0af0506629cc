"""Mention linking (retrieval/mentions.py) on the bundled ReDial movies: titles typed as plain text are linked,
common words are not, the router excludes what was linked, and the measured figures hold on a seeded sample."""

from __future__ import annotations

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.titles import normalize_title, titles_of
from dlsearch.evaluation.mentions import linking_report, load_typed_titles
from dlsearch.retrieval.mentions import MentionLinker, link_conversation, linker_for


@pytest.fixture(scope="module")
def redial(redial_data):
    return redial_data


@pytest.fixture(scope="module")
def linker(redial):
    return linker_for(redial[0])


def _titles(linker, text):
    return [normalize_title(linker.catalog[m.item_id].title) for m in linker.find(text)]


def _titles_prefer(linker, text, prefer):
    return [normalize_title(linker.catalog[m.item_id].title) for m in linker.find(text, prefer=prefer)]


def test_titles_in_plain_text(linker):
    assert _titles(linker, "I loved The Matrix and Inception, what else?") == ["the matrix (1999)", "inception (2010)"]
    assert _titles(linker, "They loved Toy Story and Finding Nemo") == ["toy story (1995)", "finding nemo (2003)"]
    assert _titles(linker, "i also loved the dark knihgt rises") == ["the dark knight rises (2012)"]  # one typo
    assert _titles(linker, "Have you seen Heat (1995)?") == ["heat (1995)"]  # the year picks among namesakes
    assert _titles(linker, "I prefer the original jumanji") == ["jumanji (1995)"]  # "original": the oldest
    assert _titles(linker, "did you watch click ?") == ["click (2006)"]  # a common word, said as a film


def test_common_words_need_a_cue(linker):
    for text in ("It was great, I have seen it twice", "What are you doing this weekend?", "I like them both",
                 "Hi! I'm looking for a good horror movie for Halloween.", "Up next: something with my kids",
                 "Are you a Ben Stiller fan?", "haha :D", "I am looking for a scary movie", "@85036 is my favorite"):
        assert linker.find(text) == [], text
    assert _titles(linker, 'Have you seen "Up"?') == ["up (2009)"]


def test_a_typo_that_makes_a_real_word_is_not_read_as_a_typo(linker):
    """ReDial dev false links: "goodie" (Zipf 2.8) was read as Goldie (1931), "caper" (2.9) as Casper (1995),
    "maniacs" as Maniac (2012); words from Zipf 2.5 are real words, read as a typo only before the year."""
    for text in ("That's an oldie but goodie!", "I enjoy caper movies as well like", "his beloved maiden aunts are "
                 "homicidal maniacs, and that insanity runs in his family."):
        assert linker.find(text) == [], text
    assert _titles(linker, "I'd love to see Goodie (1931)") == ["goldie (1931)"]


def test_a_short_word_typo_is_read_before_the_year(linker):
    """ReDial typed mentions with a typo in a word of 2-3 letters ("Gat Out", "Tmop Gun", "Efl") are linked when
    the year follows; without the year they stay unread (one edit turns "get" into "gat", "elf" into "elk")."""
    assert _titles(linker, "And consider Gat Out (2017) if you haven't seen it.") == ["get out (2017)"]
    assert _titles(linker, "Cool!  I love the music from Tmop Gun (1986) .") == ["top gun (1986)"]
    assert _titles(linker, "Efl (2003) is good for Christmas time, but it is a bit corny.") == ["elf (2003)"]
    assert linker.find("have you seen gat out?") == []


def test_a_told_title_is_in_the_clause_of_its_verb(linker):
    """ReDial: "What kind of movies do you like?    was epic!" linked Epic (2013) through "like" of the previous
    sentence; "seen"/"like"/... cue a common title only in the same clause."""
    assert linker.find("What kind of movies do you like?    was epic!") == []
    assert _titles(linker, "did you watch click ?") == ["click (2006)"]


def test_a_lower_case_title_after_a_or_an_is_a_noun(linker):
    """ReDial: "It really is a hoot" linked Hoot (2006), "a war movie about an orphan" Orphan (2009)."""
    assert linker.find("My husband and I re-watched   recently.  It really is a hoot and makes for a fun trip.") == []
    assert "orphan (2009)" not in _titles(linker, "is it a war movie about an orphan or war bride?")
    assert _titles(linker, "I loved Orphan, so creepy") == ["orphan (2009)"]


def test_namesakes_resolve_to_the_work_the_conversation_mentions(linker):
    """ReDial: "I saw Sherlock Holmes" after "@134633" (Sherlock Holmes, 2009) linked the 2010 film; "I loved Jungle
    Book." after The Jungle Book (2016) linked Jungle Book (2018); "the Ring" after Ring (1998) The Ring (2002)."""
    assert _titles(linker, "I saw Sherlock Holmes") == ["sherlock holmes (2010)"]  # most mentioned, no context
    assert _titles_prefer(linker, "I saw Sherlock Holmes", ["134633"]) == ["sherlock holmes (2009)"]
    assert _titles_prefer(linker, "I loved Jungle Book.", ["178715"]) == ["the jungle book (2016)"]
    assert _titles_prefer(linker, "I saw the Ring but not Sinister.", ["112284"]) == ["ring (1998)"]
    conv = Conversation("c", [Message("assistant", "Have you seen @134633 ?"), Message("user", "I saw Sherlock Holmes")])
    assert [linker.catalog[m.item_id].title.strip() for m in linker.find_in(conv)] == ["Sherlock Holmes  (2009)"]


def test_one_typo_two_titles_gives_the_same_answer_whatever_the_hash_seed():
    """"thid man" is one edit from "third man" and "thin man"; the answer hung on set order (PYTHONHASHSEED) and the
    bench's recall moved by one between runs. Now the more mentioned title wins, in every process."""
    for popular in ("The Third Man (1949)", "The Thin Man (1934)"):
        items = [Item(str(n), t, meta={"nbMentions": 10 if t == popular else 1})
                 for n, t in enumerate(("The Third Man (1949)", "The Thin Man (1934)"))]
        linker = MentionLinker(Catalog(items))
        assert [linker.catalog[m.item_id].title for m in linker.find("the thid man is a classic")] == [popular]


def test_link_conversation_extends_exclude_and_records_links(linker):
    conv = Conversation("c", [Message("user", "I loved The Matrix, and @111776")], exclude=["1"])
    linked = link_conversation(conv, linker)
    assert linked.exclude == ["1", "111776", "85036"] and conv.exclude == ["1"]  # a copy
    [m] = linked.meta["linked_mentions"]
    assert m["item_id"] == "85036" and m["text"] == "The Matrix" and m["message"] == 0 and m["how"] == "exact"
    assert set(titles_of(linker.catalog).group("85036")) == {"85036", "140395"}  # the router drops both


def test_measured_figures_on_a_seeded_sample(redial, linker):
    """bench/bench_mentions.py's protocol on every 6th dialogue (224 dialogues, all in the dev half, seed 0): the
    figures of docs/retrieval.md at this sample's size. Thresholds sit just under the sample's measured values."""
    report = linking_report(linker, redial[1][::6], seed=0, typed=load_typed_titles(redial[1], redial[0]))
    assert report["messages_with_mentions"] > 500 and report["messages_without_mentions_checked"] > 2000
    assert report["precision"] >= 0.95
    assert report["recall"] >= RECALL_FLOOR
    assert report["false_links_per_1000"] <= FALSE_LINKS_CEILING


RECALL_FLOOR = 0.89  # measured 0.8928 (load 10, 2026-12-01)
FALSE_LINKS_CEILING = 4.0  # measured 3.575 (4.597 without the checked typed titles)
