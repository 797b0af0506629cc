"""evaluation/mentions.py: the false-link protocol's exceptions (a film of the conversation, a hand-checked typed
title) and the checked-titles file, on real ReDial messages."""

from __future__ import annotations

import json

import pytest

from dlsearch.data.catalog import Catalog, CatalogError, Item
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.redial import load_redial
from dlsearch.evaluation.mentions import TYPED_TITLES, linking_report, load_typed_titles
from dlsearch.retrieval.mentions import MentionLinker

# Real ReDial messages (dialogues 20836 and 21257, dev half) that type a film without an `@id`.
HELLBOY = "Yes I seen hellboy!"
NEMO = "Did you watch finding nemo?"


@pytest.fixture(scope="module")
def tiny():
    catalog = Catalog([Item("151350", "Hellboy  (2004)"), Item("154844", "Finding Nemo (2003)"),
                       Item("1", "Hellboy II: The Golden Army (2008)")])
    conv = Conversation("20836", [Message("user", "Any good animated films you'd suggest?"),
                                  Message("assistant", HELLBOY), Message("user", NEMO)])
    return MentionLinker(catalog), conv


def test_a_checked_typed_title_is_counted_apart_and_in_the_strict_count(tiny):
    linker, conv = tiny
    plain = linking_report(linker, [conv])
    assert plain["false_links"] == 2 and plain["links_to_checked_typed_titles"] == 0
    rep = linking_report(linker, [conv], typed={("20836", 1, "151350")})
    assert rep["false_links"] == 1 and rep["links_to_checked_typed_titles"] == 1  # nemo is not labelled: false
    assert rep["false_links_strict"] == 2 and rep["false_links_strict_per_1000"] == plain["false_links_per_1000"]
    assert [e["linked"] for e in rep["examples_false_links"]] == ["finding nemo"]
    # a label names one message: the same title elsewhere is still a false link
    assert linking_report(linker, [conv], typed={("20836", 2, "151350")})["false_links"] == 2


def test_a_film_the_conversation_mentions_is_not_a_false_link(tiny):
    linker, conv = tiny
    with_id = Conversation(conv.id, conv.messages + [Message("user", "I liked @154844 a lot")])
    rep = linking_report(linker, [with_id])
    assert rep["false_links"] == 1 and rep["links_to_films_of_the_conversation"] == 1


def _write(tmp_path, rec):
    path = tmp_path / "typed.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    return path


def test_typed_titles_file_errors_name_line_and_field(tiny, tmp_path):
    linker, conv = tiny
    good = {"conversationId": "20836", "message": 1, "movieId": "151350", "text": "hellboy", "why": "said as seen"}
    assert load_typed_titles([conv], linker.catalog, _write(tmp_path, good)) == {("20836", 1, "151350")}
    for bad, field in (({**good, "message": "1"}, "message"), ({**good, "movieId": "999"}, "movieId"),
                       ({**good, "message": 7}, "message"), ({**good, "text": "finding nemo"}, "text"),
                       ({k: v for k, v in good.items() if k != "why"}, "why")):
        with pytest.raises(CatalogError, match=rf"typed.jsonl.*line 1.*field '{field}'"):
            load_typed_titles([conv], linker.catalog, _write(tmp_path, bad))


def test_the_shipped_labels_fit_redial():
    catalog, dialogues = load_redial()
    labels = load_typed_titles(dialogues, catalog)
    rows = [json.loads(line) for line in TYPED_TITLES.read_text().splitlines()]
    assert len(labels) == len(rows) and {r["half"] for r in rows} == {"dev", "held_out"}
    index = {c.id: n for n, c in enumerate(dialogues)}
    assert all((index[r["conversationId"]] % 2 == 0) == (r["half"] == "dev") for r in rows)  # dev = even dialogues
