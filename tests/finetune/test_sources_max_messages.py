"""data.max_messages caps the conversation context of conversation-task examples (trl truncates keep_start, so an
over-long prompt would lose its completion)."""

from __future__ import annotations

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.ids import build_idmap
from dlsearch.finetune.config import DataConfig
from dlsearch.finetune.sources import task_examples


def test_max_messages_keeps_only_the_last_messages() -> None:
    catalog = Catalog([Item("1", "Alien (1979)", "", ("sci-fi", "horror"), {}), Item("2", "Heat (1995)", "", ("crime",), {})])
    idmap = build_idmap(catalog, "atomic")
    msgs = [Message("user" if i % 2 == 0 else "assistant", f"message number {i}") for i in range(9)]
    conv = Conversation(id="d1:9", messages=msgs, exclude=[], targets=["1"], meta={})
    extras = {"conversations": [conv] * 20}
    full = task_examples("conversation->concepts", catalog, idmap, extras, DataConfig(dataset="redial"))
    capped = task_examples("conversation->concepts", catalog, idmap, extras, DataConfig(dataset="redial", max_messages=2))
    assert len(full) == len(capped) > 0
    assert "message number 0" in full[0]["prompt"] and "message number 0" not in capped[0]["prompt"]
    assert "message number 8" in capped[0]["prompt"] and "message number 7" in capped[0]["prompt"]
    assert "message number 6" not in capped[0]["prompt"]
    assert capped[0]["completion"].strip() == "sci-fi, horror"
