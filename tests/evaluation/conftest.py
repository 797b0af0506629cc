"""Evaluation fixtures: a tiny prepared ReDial directory built from the real shipped files.

Stand-in for `dlsearch data prepare --dataset redial` (foundation area) so these tests do not depend on its
progress: same layout (catalog.jsonl, conversations/{train,validation,test}.jsonl), one record per recommender turn.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import mention_ids, Conversation, Message, save_conversations

N_DIALOGUES = 90  # first dialogues of the shipped file: 60 train, 30 test
N_TRAIN = 60


def turn_records(rec: dict) -> list[Conversation]:
    """One record per respondent message that mentions a movie: context before it, its mentions as targets."""
    out, msgs, mentioned = [], [], []
    for n, m in enumerate(rec["messages"]):
        role = "user" if m["senderWorkerId"] == rec["initiatorWorkerId"] else "assistant"
        ids = list(dict.fromkeys(mention_ids(m["text"])))
        if role == "assistant" and ids and msgs:
            out.append(Conversation(f"{rec['conversationId']}:{n}", list(msgs), exclude=list(mentioned), targets=ids,
                                    meta={"dialogue_id": str(rec["conversationId"])}))
        msgs.append(Message(role, m["text"]))
        mentioned.extend(i for i in ids if i not in mentioned)
    return out


@pytest.fixture(scope="session")
def redial_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(__file__).resolve().parents[2] / "data" / "datasets" / "redial"
    out = tmp_path_factory.mktemp("redial-prepared")
    with open(root / "movies_with_mentions.csv", encoding="utf-8") as f:
        items = [Item(r["movieId"], r["movieName"]) for r in csv.DictReader(f)]
    Catalog(items).save_jsonl(out / "catalog.jsonl")
    with open(root / "test_data.jsonl", encoding="utf-8") as f:
        dialogues = [json.loads(line) for _, line in zip(range(N_DIALOGUES), f)]
    save_conversations(out / "conversations" / "train.jsonl", [t for d in dialogues[:N_TRAIN] for t in turn_records(d)])
    save_conversations(out / "conversations" / "validation.jsonl", [])
    save_conversations(out / "conversations" / "test.jsonl", [t for d in dialogues[N_TRAIN:] for t in turn_records(d)])
    # what prepare records: evaluate names the dataset (and adds ReDial's note) from it
    (out / "manifest.json").write_text(json.dumps({"dataset": "redial", "dataset_name": "redial", "split": "seeded", "ratios": None}))
    return out
