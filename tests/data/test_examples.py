"""Prompt/completion examples from the real ReDial and MovieLens data; recommender turns."""

import pytest

from dlsearch.data.examples import COLUMNS, conversation_examples, history_examples, indexing_examples, search_query
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.ids import build_idmap
from dlsearch.data.prompts import ANSWER_PREFIX, make_prompt
from dlsearch.data.splits import split_histories
from dlsearch.data.turns import all_recommender_turns, recommender_turns, seeker_turns


@pytest.fixture(scope="module")
def redial_idmap(redial):
    return build_idmap(redial[0], "sequential")


def test_recommender_turns_on_first_dialogue(redial):
    d0 = redial[1][0]
    turns = recommender_turns(d0)
    assert turns[0].id == "20001:1" and turns[0].targets == ["151656"] and turns[0].exclude == ["111776"]
    assert [m.role for m in turns[0].messages] == ["user"]
    assert turns[0].meta["labels"]["151656"]["suggested"] == 1  # kept as metadata only
    for t in turns:
        assert t.messages[-1] == d0.messages[t.meta["turn"] - 1] and d0.messages[t.meta["turn"]].role == "assistant"
        assert not set(t.targets) & set(t.exclude)


def test_repeated_mention_is_not_a_target():
    conv = Conversation("d", [Message("user", "like @1"), Message("assistant", "try @2"), Message("user", "seen @2"),
                               Message("assistant", "then @2 again or @3")])
    turns = recommender_turns(conv)
    assert [t.targets for t in turns] == [["2"], ["3"]] and turns[1].meta["repeated"] == ["2"]


def test_indexing_covers_every_item(redial, redial_idmap):
    catalog = redial[0]
    ds = indexing_examples(catalog, redial_idmap)
    assert tuple(ds.column_names) == COLUMNS
    for task in ("title->id", "id->title"):
        assert set(ds.filter(lambda r: r["task"] == task)["item_id"]) == set(catalog.ids)
    assert len(ds.filter(lambda r: r["task"] == "item->concepts")) == sum(1 for it in catalog if it.concepts)
    row = ds[0]
    assert row["prompt"].endswith(ANSWER_PREFIX) and row["completion"] == " " + redial_idmap.code(row["item_id"])
    assert row["prompt"] == make_prompt("title->id", f"Title: {catalog[row['item_id']].title}")


def test_conversation_examples_titles_and_targets(redial, redial_idmap):
    catalog, dialogues = redial
    ds = conversation_examples(dialogues[:50], catalog, redial_idmap)
    turns = all_recommender_turns(dialogues[:50])
    assert len(ds) == sum(len(t.targets) for t in turns) > 50
    assert "@" not in ds[0]["prompt"] and "Super Troopers" in ds[0]["prompt"]  # mentions rendered as titles
    assert ds[0]["completion"] == " " + redial_idmap.code(ds[0]["item_id"])
    by_id = conversation_examples(dialogues[:5], catalog, redial_idmap, render="id")
    assert redial_idmap.code("111776") in by_id[0]["prompt"]
    concepts = conversation_examples(turns, catalog, redial_idmap, task="conversation->concepts")
    assert 0 < len(concepts) <= len(ds) and all(r["completion"].strip() for r in concepts)
    query = conversation_examples(turns, catalog, redial_idmap, task="conversation->query")
    assert len(query) == len(ds)


def test_search_query(movielens):
    assert search_query(movielens[0]["1"]) == "Toy Story Adventure Animation Children"


def test_history_examples(movielens):
    catalog, histories = movielens
    idmap = build_idmap(catalog, "atomic")
    splits = split_histories(dict(list(histories.items())[:20]))
    test = history_examples(splits["test"], catalog, idmap, "test")
    assert len(test) == 20
    user = next(iter(splits["test"]))
    assert test[0]["item_id"] == splits["test"][user][-1][0]
    assert catalog[splits["test"][user][-2][0]].title in test[0]["prompt"]
    train = history_examples(splits["train"], catalog, idmap, "train", train_targets=5)
    assert len(train) == 100 and not set(train["source_id"]) & set(test["source_id"])


def test_seeker_turns_cut_at_the_users_new_mentions():
    conv = Conversation("d", [Message("user", "hi"), Message("assistant", "what do you like? @1?"),
                              Message("user", "I loved @2 and @1"), Message("assistant", "try @3"),
                              Message("user", "seen @3, liked @4"), Message("assistant", "then @5")])
    turns = seeker_turns([conv])
    assert [(t.id, t.targets, t.exclude) for t in turns] == [("d:2", ["2"], ["1"]), ("d:4", ["4"], ["1", "2", "3"])]
    assert [len(t.messages) for t in turns] == [2, 4] and all(t.messages[-1].role == "assistant" for t in turns)
    # from prepare's turn records (one per recommender turn) the longest context of the dialogue is cut: the same
    # turns, except mentions after the last recommender turn, which no record holds
    records = recommender_turns(conv)
    assert [t.id for t in records] == ["d:1", "d:3", "d:5"]
    assert [(t.id, t.targets) for t in seeker_turns(records)] == [("d:2", ["2"]), ("d:4", ["4"])]
    assert [(t.id, t.targets) for t in seeker_turns(records[:2])] == [("d:2", ["2"])]


def test_mention_examples_on_redial(redial, redial_idmap):
    catalog, dialogues = redial
    records = all_recommender_turns(dialogues[:40])
    rows = conversation_examples(records, catalog, redial_idmap, task="conversation->mention")
    rec = conversation_examples(records, catalog, redial_idmap)
    assert len(rows) > 0.3 * len(rec)  # ReDial's users name films too: ~half as many rows as the recommenders' targets
    assert set(rows["task"]) == {"conversation->mention"}
    assert all(p.startswith(make_prompt("conversation->mention", "").split("\n")[0] + "\n") for p in rows["prompt"])
    by_turn = {t.id: t for t in seeker_turns(records)}
    for r in rows:
        turn = by_turn[r["source_id"]]
        assert r["item_id"] in turn.targets and r["item_id"] not in turn.exclude
        assert r["completion"] == " " + redial_idmap.code(r["item_id"])
    # a user's mention of an item outside the catalog is skipped, not an error
    conv = Conversation("x", [Message("assistant", "hello"), Message("user", "I liked @nope and @" + next(iter(catalog.ids)))])
    assert [r["item_id"] for r in conversation_examples([conv], catalog, redial_idmap, task="conversation->mention")] == [next(iter(catalog.ids))]
