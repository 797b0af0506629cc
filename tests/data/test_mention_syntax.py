"""Mentions in free text (`@[id]` and `@id`) and the ONE conversation renderer shared by training and inference."""

from __future__ import annotations

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message, format_mention, mention_ids
from dlsearch.data.ids import build_idmap


def test_hyphenated_bare_mention_is_the_whole_id():
    # regression: @(\w+) read "@tt-0111" as the item "tt"
    assert mention_ids("I loved @tt-0111 and @42.") == ["tt-0111", "42"]


def test_bracket_mentions_take_any_printable_id():
    assert mention_ids("try @[B0-7XK] or @[a b/c] then @[x]y") == ["B0-7XK", "a b/c", "x"]
    assert format_mention("B0-7XK") == "@B0-7XK"
    assert format_mention("a b") == "@[a b]"
    for item_id in ("B0-7XK", "a b", "x.", "-1", "tt-0111", "42"):
        assert mention_ids(f"see {format_mention(item_id)}.") == [item_id]


def test_ids_with_brackets_or_backslashes_round_trip():
    # regression: format_mention("x]1") wrote @[x]1], which reads back as the item "x"
    assert format_mention("x]1") == "@[x\\]1]" and mention_ids("@[x\\]1] and @[a\\[2\\]]") == ["x]1", "a[2]"]
    for item_id in ("x]1", "[a]", "a\\", "a\\b", "a\\]", "C:\\dir"):
        assert mention_ids(f"see {format_mention(item_id)}, {format_mention(item_id)}.") == [item_id, item_id]
    assert mention_ids("@[a\\b]") == ["a\\b"]  # a backslash before another character is itself


def test_bracketed_id_renders_as_its_title():
    from dlsearch.data.formats import render_mentions

    titles = {"x]1": "Bracket film"}
    assert render_mentions("I loved @[x\\]1] and @nope", titles.get) == "I loved Bracket film and @nope"


def test_hyphenated_ids_render_their_own_title_not_another_item():
    from dlsearch.data.prompts import render_conversation

    cat = Catalog([Item("tt", "Wrong Movie"), Item("tt-0111", "Right Movie")])
    conv = Conversation("c", [Message("user", "I loved @tt-0111")])
    assert render_conversation(conv, cat) == "User: I loved Right Movie"
    assert conv.mentioned() == ["tt-0111"]


def test_unknown_mention_stays_as_written():
    from dlsearch.data.prompts import render_conversation

    conv = Conversation("c", [Message("user", "about @[zz 9] and @77")])
    assert render_conversation(conv, Catalog([Item("1", "A")])) == "User: about @[zz 9] and @77"


def test_training_prompt_equals_inference_prompt_on_every_redial_turn(redial):
    """Regression: data/examples.py stripped titles, decoding/generate.py did not (172 of 3,838 turns differed)."""
    from dlsearch.data.examples import conversation_rows
    from dlsearch.data.turns import all_recommender_turns
    from dlsearch.decoding.generate import conversation_prompt
    from dlsearch.evaluation import baselines
    from dlsearch.retrieval.embedding import conversation_text as encoder_text
    from dlsearch.data.prompts import render_conversation

    catalog, dialogues = redial
    turns = all_recommender_turns(dialogues)
    assert len(turns) == 3838
    idmap = build_idmap(catalog, "sequential")
    rows = conversation_rows(turns, catalog, idmap)
    trained = {}
    for r in rows:
        trained.setdefault(r["source_id"], r["prompt"])
    assert len(trained) == len(turns)
    differ = [t.id for t in turns if conversation_prompt(t, catalog) != trained[t.id]]
    assert differ == []
    # BM25 / encoder query text and the baselines read the same context text as the prompt (one function)
    assert baselines.conversation_text is encoder_text
    for t in turns[:200]:
        assert encoder_text(t, catalog, max_messages=None) == render_conversation(t, catalog)
    assert any(it.title != it.title.strip() for it in catalog)  # the case that used to differ is present


@pytest.mark.parametrize("bad", ["a\nb", "a\tb", "a\x00b"])
def test_control_characters_in_ids_are_refused_with_file_line_field(tmp_path, bad):
    import json

    from dlsearch.data.catalog import CatalogError, load_catalog_jsonl
    from dlsearch.data.formats import load_conversations

    p = tmp_path / "catalog.jsonl"
    p.write_text(json.dumps({"id": "ok", "title": "A"}) + "\n" + json.dumps({"id": bad, "title": "B"}) + "\n")
    with pytest.raises(CatalogError) as e:
        load_catalog_jsonl(p)
    assert (e.value.path, e.value.line, e.value.field) == (str(p), 2, "id") and "control character" in str(e.value)
    c = tmp_path / "conversations.jsonl"
    c.write_text(json.dumps({"id": "c1", "messages": [{"role": "user", "content": "hi"}], "targets": [bad]}) + "\n")
    with pytest.raises(CatalogError) as e:
        load_conversations(c)
    assert (e.value.line, e.value.field) == (1, "targets")


def test_unknown_mentions_are_reported_with_file_and_line(tmp_path):
    import json

    from dlsearch.data.catalog import CatalogError
    from dlsearch.data.formats import load_conversations

    cat = Catalog([Item("tt", "Wrong"), Item("B0-7XK", "Lamp")])
    c = tmp_path / "conversations.jsonl"
    lines = [{"id": "c1", "messages": [{"role": "user", "content": "I want @[B0-7XK]"}]},
             {"id": "c2", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "try @tt-0111"}]}]
    c.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(CatalogError) as e:
        load_conversations(c, cat)
    assert (e.value.path, e.value.line, e.value.field) == (str(c), 2, "messages[1]") and "@tt-0111" in str(e.value)


@pytest.mark.parametrize("title", ["\u00a0\u200b", "\u200b\u200c\ufeff", " \u00a0 "])
def test_invisible_titles_are_refused(tmp_path, title):
    import json

    from dlsearch.data.catalog import CatalogError, load_catalog_jsonl

    p = tmp_path / "catalog.jsonl"
    p.write_text(json.dumps({"id": "1", "title": title}) + "\n")
    with pytest.raises(CatalogError) as e:
        load_catalog_jsonl(p)
    assert (e.value.line, e.value.field) == (1, "title")


def test_title_and_text_bounds_are_configurable(tmp_path):
    import json

    from dlsearch.data.catalog import CatalogError, load_catalog_jsonl

    p = tmp_path / "catalog.jsonl"
    p.write_text(json.dumps({"id": "1", "title": "x" * 513, "text": "y" * 70_000}) + "\n")
    with pytest.raises(CatalogError, match="max_title_chars=512") as e:
        load_catalog_jsonl(p)
    assert e.value.field == "title"
    with pytest.raises(CatalogError, match="max_text_bytes=65536"):
        load_catalog_jsonl(p, max_title_chars=1000)
    assert len(load_catalog_jsonl(p, max_title_chars=None, max_text_bytes=None)) == 1


def test_history_writes_an_unknown_item_as_a_mention_that_reads_back():
    # regression: render_history wrote an item missing from the catalog as f"@[{id}]", unescaped: "x]1" read back as "x"
    from dlsearch.data.prompts import render_history

    cat = Catalog([Item("a", "Heat")])
    text = render_history(["a", "x]1", "tt-1"], cat)
    assert text.splitlines()[0] == "Heat" and mention_ids(text) == ["x]1", "tt-1"]


def test_email_addresses_and_escaped_handles_are_not_mentions():
    # regression: "bob@example.com" in a message was read as a mention of the item "example.com", so a real chat log
    # with an e-mail address failed to load; a handle had no way to be written at all
    from dlsearch.data.catalog import CatalogError
    from dlsearch.data.formats import check_conversation_items, conversation_from_record, render_mentions

    assert mention_ids("mail bob@example.com or me@[x], I loved @B0-1") == ["B0-1"]
    assert mention_ids("\\@john loved @a and \\@[b]") == ["a"]
    assert render_mentions("\\@john loved @a, ask bob@a.org", {"a": "Heat"}.get) == "@john loved Heat, ask bob@a.org"
    cat = Catalog([Item("a", "Heat")])
    rec = {"id": "c1", "messages": [{"role": "user", "content": "write to bob@example.com, \\@john says @a"}]}
    conv = conversation_from_record(rec)
    check_conversation_items(conv, cat)
    assert conv.mentioned() == ["a"]
    bad = conversation_from_record({"id": "c2", "messages": [{"role": "user", "content": "@john says @a"}]})
    with pytest.raises(CatalogError, match=r"mention @john is not a catalog item .* such as a handle, as \\@john"):
        check_conversation_items(bad, cat)


def test_csv_conversation_text_with_an_email_loads(tmp_path):
    from dlsearch.data.loaders import load_utterances

    cat = Catalog([Item("a", "Heat")])
    p = tmp_path / "conv.csv"
    p.write_text("conversation_id,role,text\nc1,user,mail me at bob@example.com about @a\nc1,assistant,try @a\n")
    convs = load_utterances(p, catalog=cat)
    assert [c.mentioned() for c in convs] == [["a"]]
