"""The query->id task (DSI's retrieval task): training queries read from a prepared dir's queries.jsonl."""

import json
from pathlib import Path

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.ids import build_idmap
from dlsearch.finetune.config import DataConfig
from dlsearch.finetune.sources import task_examples


def _catalog() -> Catalog:
    return Catalog([Item("1", "Heat (1995)", concepts=["Action", "Crime"]), Item("2", "Toy Story (1995)", concepts=["Animation"])])


def _write(root: Path, lines: list[str]) -> None:
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_query_examples_use_the_title_prompt_with_the_query(tmp_path) -> None:
    cat = _catalog()
    idmap = build_idmap(cat, "sequential")
    _write(tmp_path, [json.dumps({"query": "heat (Crime)", "item_id": "1"}), "", json.dumps({"query": "toy (Animation)", "item_id": "2"})])
    ds = task_examples("query->id", cat, idmap, {}, DataConfig(dataset=str(tmp_path)))
    assert ds["task"] == ["query->id", "query->id"] and ds["item_id"] == ["1", "2"]
    assert "heat (Crime)" in ds["prompt"][0] and idmap.code("1") in ds["completion"][0]
    title_ds = task_examples("title->id", cat, idmap, {}, DataConfig(dataset=str(tmp_path)))
    # same prompt template as title->id, so direct search asks both with one prompt
    assert title_ds["prompt"][0].replace("Heat (1995)", "heat (Crime)") == ds["prompt"][0]


@pytest.mark.parametrize("line, message", [
    ('{"query": "heat"}', "'query' and 'item_id'"),
    ("not json", "'query' and 'item_id'"),
    ('{"query": " ", "item_id": "1"}', "non-empty"),
    ('{"query": "heat", "item_id": "99"}', "'99' is not in the catalog"),
])
def test_bad_query_lines_are_named(tmp_path, line, message) -> None:
    cat = _catalog()
    _write(tmp_path, [json.dumps({"query": "heat", "item_id": "1"}), line])
    with pytest.raises(ValueError, match=message) as e:
        task_examples("query->id", cat, build_idmap(cat, "sequential"), {}, DataConfig(dataset=str(tmp_path)))
    assert "queries.jsonl:2" in str(e.value)


def test_query_task_needs_a_prepared_dir(tmp_path) -> None:
    cat = _catalog()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        task_examples("query->id", cat, build_idmap(cat, "sequential"), {}, DataConfig(dataset=str(tmp_path)))
    with pytest.raises(ValueError, match="prepared dir"):
        task_examples("query->id", cat, build_idmap(cat, "sequential"), {}, DataConfig(dataset="movielens"))
