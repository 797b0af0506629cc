"""`dlsearch data prepare` end to end: outputs, manifest, reuse on re-run; on a small folder dataset and on ReDial."""

import json

from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.formats import load_conversations
from dlsearch.data.ids import IdMap
from dlsearch.data.prepare import load_examples, prepare
from dlsearch.data.splits import check_conversation_splits
from dlsearch.cli import main

SPLIT_NAMES = ("train", "validation", "test")


def _folder(tmp_path, redial, n_dialogues=40):
    """A PATH dataset: the items of the first ReDial dialogues and those dialogues, in the shared formats."""
    catalog, dialogues = redial
    dialogues = dialogues[:n_dialogues]
    ids = list(dict.fromkeys(i for d in dialogues for i in d.mentioned()))
    src = tmp_path / "src"
    catalog.subset(ids).save_jsonl(src / "catalog.jsonl")
    from dlsearch.data.formats import save_conversations

    save_conversations(src / "conversations.jsonl", dialogues)
    return src, len(ids)


def test_prepare_folder_semantic_reuses_finished_steps(tmp_path, redial, embedding_cache):
    src, n_items = _folder(tmp_path, redial)
    out = tmp_path / "out"
    logs = []
    params = {"codebook_size": 8, "levels": 2}
    man = prepare(str(src), "semantic", out, seed=0, scheme_params=params, cache_dir=embedding_cache, log=logs.append)
    assert man["reused_steps"] == []
    assert len(load_catalog_jsonl(out / "catalog.jsonl")) == n_items
    idmap = IdMap.load(out / "idmap.json")
    assert idmap.scheme == "semantic" and len(idmap) == n_items and idmap.params["codebook_size"] == 8
    splits = {s: load_conversations(out / "conversations" / f"{s}.jsonl") for s in SPLIT_NAMES}
    check_conversation_splits(splits)
    train = load_examples(out, "train")
    assert set(train["task"]) >= {"title->id", "id->title", "conversation->item"}
    assert man["stats"]["examples"]["train"] == len(train)
    assert man["versions"]["datasets"] and man["seed"] == 0 and man["scheme"] == "semantic"
    assert "utilization" in man["stats"]["idmap"]

    again = prepare(str(src), "semantic", out, seed=0, scheme_params=params, cache_dir=embedding_cache, log=logs.append)
    assert again["reused_steps"] == ["catalog", "splits", "idmap", "examples"]
    assert json.loads(logs[-1])["reused_steps"] == again["reused_steps"]

    (out / "examples" / "test.jsonl").write_text("tampered\n")  # a damaged output is rebuilt, not trusted
    third = prepare(str(src), "semantic", out, seed=1, scheme_params=params, cache_dir=embedding_cache, log=logs.append)
    assert third["reused_steps"] == ["catalog"]  # a new seed redoes splits, ids and examples
    assert load_examples(out, "test")[0]["prompt"].startswith("### Task:")


def test_cli_prepare_redial_atomic(tmp_path, capsys):
    out = tmp_path / "redial"
    assert main(["data", "prepare", "--dataset", "redial", "--ids", "atomic", "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["catalog"]["items"] == 6924 and stats["catalog"]["linked"] > 3500
    conv = stats["conversations"]
    assert sum(v["dialogues"] for v in conv.values()) > 1300
    assert stats["examples_by_task"]["train"]["title->id"] == 6924
    test = load_conversations(out / "conversations" / "test.jsonl")
    assert all(t.targets and not set(t.targets) & set(t.exclude) for t in test)


def test_cli_prepare_redial_with_linked_movielens_histories(tmp_path, capsys, movielens):
    """--histories movielens: MovieLens ratings land on the ReDial items their movies link to, with the ReDial
    conversation splits unchanged; history rows name ReDial titles and target ReDial items."""
    from dlsearch.data.catalog import read_jsonl

    plain, linked = tmp_path / "plain", tmp_path / "linked"
    assert main(["data", "prepare", "--dataset", "redial", "--ids", "title", "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["data", "prepare", "--dataset", "redial", "--ids", "title", "--histories", "movielens", "--out", str(linked)]) == 0
    stats = json.loads(capsys.readouterr().out)
    catalog = load_catalog_jsonl(linked / "catalog.jsonl")
    # the conversation splits are the ones prepared without histories: models stay comparable
    for s in SPLIT_NAMES:
        assert (linked / "conversations" / f"{s}.jsonl").read_bytes() == (plain / "conversations" / f"{s}.jsonl").read_bytes()
    # every event is a ReDial item linked to the MovieLens movie the user rated
    ml_catalog, ml_hist = movielens
    user = "1"
    events = {str(r["id"]): r["events"] for _, r in read_jsonl(linked / "histories" / "test.jsonl")}[f"ml:{user}"]
    rated = {m for m, _ in ml_hist[user]}
    assert len(events) > 100
    for item, _ in events:
        assert item in catalog and set(catalog[item].meta["movielens_ids"]) & rated
    assert stats["source"]["movielens_histories"]["users"] == stats["histories"]["test"]["users"] == 610
    assert stats["histories"]["test"]["events"] < sum(len(ev) for ev in ml_hist.values())  # unlinked ratings dropped
    rows = [r for _, r in read_jsonl(linked / "examples" / "train.jsonl") if r["task"] == "history->next_item"]
    assert rows and all(r["item_id"] in catalog for r in rows)
    idmap = IdMap.load(linked / "idmap.json")
    assert all(r["completion"].strip() == idmap.code(r["item_id"]).strip() for r in rows[:50])
    titles = {it.title for it in catalog}
    for r in rows[:50]:  # contexts name ReDial display titles, one per line
        context = r["prompt"].split("History:\n", 1)[1].split("\n###", 1)[0].splitlines()
        assert context and all(line in titles for line in context)
    assert json.loads((linked / "manifest.json").read_text())["extra_histories"] == "movielens"


def test_collaborative_ids_see_histories_and_training_dialogues_together():
    """With linked histories a ReDial prepare has both: collaborative ids see both (they saw only the histories)."""
    from dlsearch.data.formats import Conversation, Message
    from dlsearch.data.prepare import _train_interactions

    turn = Conversation(id="d1:2", messages=[Message("user", "hi")], targets=["b"], exclude=["a"], meta={"dialogue_id": "d1"})
    hist = {"ml:1": [("a", 5), ("c", 6)]}
    seen = _train_interactions([turn], hist)
    assert seen == {"ml:1": [("a", 5), ("c", 6)], "dialogue:d1": [("a", 0), ("b", 0)]}
    assert _train_interactions([turn], None) == {"d1": [("a", 0), ("b", 0)]}
    assert _train_interactions([], hist) == hist and _train_interactions([], None) is None


def test_linked_histories_are_refused_for_other_datasets(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="histories: 'movielens'.*only the bundled ReDial"):
        prepare("movielens", "atomic", tmp_path / "x", extra_histories="movielens", log=lambda s: None)
    with pytest.raises(ValueError, match="not a source of extra histories"):
        prepare("redial", "atomic", tmp_path / "y", extra_histories="netflix", log=lambda s: None)


def test_cli_prepare_movielens_histories(tmp_path, capsys, movielens):
    from dlsearch.data.splits import split_histories

    expected_train = sum(min(20, len(ev) - 1) for ev in split_histories(movielens[1])["train"].values())
    out = tmp_path / "ml"
    assert main(["data", "prepare", "--dataset", "movielens", "--ids", "sequential", "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["histories"]["test"]["users"] == 610
    assert stats["examples_by_task"]["test"] == {"history->next_item": 610}
    assert stats["examples_by_task"]["train"]["history->next_item"] == expected_train
    assert len(IdMap.load(out / "idmap.json")) == 9742


def test_collaborative_ids_see_training_interactions_only(tmp_path, redial):
    from dlsearch.data.prepare import _train_interactions
    from dlsearch.data.splits import split_conversations
    from dlsearch.data.turns import all_recommender_turns

    turns = all_recommender_turns(redial[1][:60])
    splits = split_conversations(turns, seed=0)
    hist = _train_interactions(splits["train"], None)
    assert set(hist) == {t.meta["dialogue_id"] for t in splits["train"]}


def test_validation_into_train_keeps_the_test_dialogues(tmp_path, redial):
    """The refit split (--validation-into-train): train = the usual train + validation, test unchanged, validation
    empty; the same prepared dir without the flag is rebuilt from the splits on (it is a different split)."""
    src, _ = _folder(tmp_path, redial, n_dialogues=60)
    out = tmp_path / "out"
    prepare(str(src), "sequential", out, log=lambda s: None)
    usual = {s: load_conversations(out / "conversations" / f"{s}.jsonl") for s in SPLIT_NAMES}
    assert usual["validation"] and usual["test"]
    cli = ["data", "prepare", "--dataset", str(src), "--ids", "sequential", "--out", str(out), "--validation-into-train"]
    assert main(cli) == 0
    refit = {s: load_conversations(out / "conversations" / f"{s}.jsonl") for s in SPLIT_NAMES}
    assert [c.id for c in refit["train"]] == [c.id for c in usual["train"] + usual["validation"]]
    assert [c.id for c in refit["test"]] == [c.id for c in usual["test"]] and refit["validation"] == []
    man = json.loads((out / "manifest.json").read_text())
    assert man["validation_into_train"] is True and "splits" not in man["reused_steps"]
    assert man["stats"]["conversations"]["train"]["turns"] == len(usual["train"]) + len(usual["validation"])
    check_conversation_splits(refit)
