"""evaluate names the dataset and protocol from the prepared manifest (no 'redial-turns' on other data)."""

from __future__ import annotations

import json

from dlsearch.data.prepare import prepare
from dlsearch.evaluation.protocol import conversation_turns_task, prepared_histories_task


def _shop(root):
    root.mkdir()
    (root / "catalog.jsonl").write_text("".join(json.dumps({"id": f"B0-{i}X", "title": f"Lamp {i}"}) + "\n" for i in range(12)))
    convs = [{"id": f"c{d}", "split": ["train", "dev", "test"][d % 3], "messages": [
        {"role": "user", "content": f"I have @B0-{d % 12}X"}, {"role": "assistant", "content": f"try @[B0-{(d + 5) % 12}X]"}]}
        for d in range(9)]
    (root / "conversations.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    (root / "histories.jsonl").write_text("".join(json.dumps({"id": f"u{u}", "events": [[f"B0-{(u + k) % 12}X", k] for k in range(4)]}) + "\n"
                                                  for u in range(5)))
    return root


def test_tasks_are_named_after_the_prepared_dataset(tmp_path):
    out = tmp_path / "p"
    prepare(str(_shop(tmp_path / "shop")), "sequential", out, split="keep", log=lambda s: None)
    turns = conversation_turns_task(out)
    assert turns.name == "shop-turns" and "ReDial" not in turns.note and "own split" in turns.note
    assert len(turns.queries) == 3 and all(q.targets for q in turns.queries)
    nxt = prepared_histories_task(out)
    assert nxt.name == "shop-next-item" and len(nxt.queries) == 5
    assert "@[" not in nxt.queries[0].messages[0].content and "@B0-" in nxt.queries[0].messages[0].content
    assert nxt.queries[0].targets == ["B0-3X"] and sum(nxt.train_counts.values()) == 5 * 2
