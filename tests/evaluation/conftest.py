"""Evaluation fixtures: a tiny prepared ReDial directory built from the real shipped files through production code
(data.redial's loaders and data.turns' recommender turns, the cutting `dlsearch data prepare` uses), in prepare's
layout: catalog.jsonl, conversations/{train,validation,test}.jsonl, one record per recommender turn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlsearch.data.formats import save_conversations
from dlsearch.data.redial import load_dialogues, load_redial_movies
from dlsearch.data.turns import recommender_turns

N_DIALOGUES = 90  # first dialogues of the shipped file: 60 train, 30 test
N_TRAIN = 60


@pytest.fixture(scope="session")
def redial_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("redial-prepared")
    catalog = load_redial_movies()
    catalog.save_jsonl(out / "catalog.jsonl")
    dialogues = load_dialogues(catalog)[:N_DIALOGUES]
    save_conversations(out / "conversations" / "train.jsonl", [t for d in dialogues[:N_TRAIN] for t in recommender_turns(d)])
    save_conversations(out / "conversations" / "validation.jsonl", [])
    save_conversations(out / "conversations" / "test.jsonl", [t for d in dialogues[N_TRAIN:] for t in recommender_turns(d)])
    # what prepare records: evaluate names the dataset (and adds ReDial's note) from it
    (out / "manifest.json").write_text(json.dumps({"dataset": "redial", "dataset_name": "redial", "split": "seeded", "ratios": None}))
    return out
