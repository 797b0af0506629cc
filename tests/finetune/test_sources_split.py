"""Regression: finetune reads prepare's split and never re-splits (a fixed-seed re-split leaked test dialogues
whenever `prepare --seed` was not 0), for every task, on a prepared dir of any dataset."""

import json

import pytest

from dlsearch.data.formats import load_conversations
from dlsearch.data.prepare import prepare
from dlsearch.data.splits import dialogue_id
from dlsearch.finetune.config import DataConfig
from dlsearch.finetune.sources import load_source, task_examples


def _dataset(root):
    root.mkdir()
    items = [{"id": f"B0-{i:03d}", "title": f"Lamp model {i}", "concepts": ["Home", "Lighting" if i % 2 else "Decor"]} for i in range(30)]
    (root / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    convs = []
    for d in range(40):
        a, b = items[d % 30]["id"], items[(d * 7 + 3) % 30]["id"]
        convs.append({"id": f"d{d}", "messages": [
            {"role": "user", "content": f"I own @[{a}], what else?"},
            {"role": "assistant", "content": f"Try @[{b}]"}]})
    (root / "conversations.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    hist = [{"id": f"u{u}", "events": [[items[(u + k) % 30]["id"], k] for k in range(5)]} for u in range(12)]
    (root / "histories.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    return root


def test_prepared_dir_serves_conversation_and_history_tasks_from_prepares_split(tmp_path):
    ds_dir = _dataset(tmp_path / "mine")
    out = tmp_path / "prep"
    prepare(str(ds_dir), "sequential", out, seed=3, log=lambda s: None)  # seed 3: a fixed-seed re-split would differ
    train = {c.id for c in load_conversations(out / "conversations" / "train.jsonl")}
    held_out = {dialogue_id(c) for s in ("validation", "test") for c in load_conversations(out / "conversations" / f"{s}.jsonl")}
    cfg = DataConfig(dataset=str(out))
    catalog, idmap, extras = load_source(cfg)
    assert extras["prepared_dir"] == out and extras["prepared"]
    ds = task_examples("conversation->item", catalog, idmap, extras, cfg)
    used = set(ds["source_id"])
    assert used == train and not {u.split(":")[0] for u in used} & held_out
    hist = task_examples("history->next_item", catalog, idmap, extras, cfg)
    # leave-one-out: each user's last two events are validation/test targets, never training targets
    assert len(hist) == 12 * 2 and all(int(s.rsplit(":", 1)[1]) < 3 for s in hist["source_id"])


def test_prepared_dir_refuses_max_items_and_names_missing_parts(tmp_path):
    out = tmp_path / "prep"
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "catalog.jsonl").write_text('{"id": "1", "title": "A"}\n{"id": "2", "title": "B"}\n')
    prepare(str(tmp_path / "cat"), "sequential", out, log=lambda s: None)
    with pytest.raises(ValueError, match="max_items"):
        load_source(DataConfig(dataset=str(out), max_items=1))
    cfg = DataConfig(dataset=str(out))
    catalog, idmap, extras = load_source(cfg)
    with pytest.raises(ValueError, match="needs conversations; the prepared dir"):
        task_examples("conversation->item", catalog, idmap, extras, cfg)
    with pytest.raises(FileNotFoundError, match="not a prepared dir"):
        load_source(DataConfig(dataset=str(tmp_path / "cat")))


def test_redial_recipe_with_movielens_histories_trains_history_rows_over_the_redial_catalog(tmp_path):
    """data.histories: movielens prepares ReDial with MovieLens ratings on the linked ReDial items; the recipe's
    history->next_item rows then name ReDial titles (max_history of them) and target ReDial items, from the
    training events only. On a prepared dir the setting is refused (it would silently do nothing there)."""
    cfg = DataConfig(dataset="redial", id_scheme="title", histories="movielens", max_history=5)
    catalog, idmap, extras = load_source(cfg, output_dir=tmp_path)
    hist = task_examples("history->next_item", catalog, idmap, extras, cfg)
    assert len(hist) > 10_000 and set(hist["item_id"]) <= set(catalog.ids)
    row = hist[0]
    context = row["prompt"].split("History:\n", 1)[1].split("\n###", 1)[0].splitlines()
    assert 1 <= len(context) <= 5 and all(line in {it.title for it in catalog} for line in context)
    conv = task_examples("conversation->item", catalog, idmap, extras, cfg)
    assert len(conv) == 3580  # the ReDial training turns are those prepared without histories
    with pytest.raises(ValueError, match="data.histories: a prepared dir"):
        load_source(DataConfig(dataset=str(tmp_path / "data"), histories="movielens"))
