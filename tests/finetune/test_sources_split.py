"""Regression: finetune's conversation examples come only from the training dialogues of prepare's split."""

from dlsearch.data.ids import build_idmap
from dlsearch.data.redial import load_redial
from dlsearch.data.splits import dialogue_id, split_conversations
from dlsearch.data.turns import all_recommender_turns
from dlsearch.finetune.config import DataConfig
from dlsearch.finetune.sources import task_examples


def test_conversation_examples_use_prepares_train_split_only():
    catalog, dialogues = load_redial()
    prepared = split_conversations(all_recommender_turns(dialogues))  # what `dlsearch data prepare` writes
    train_dialogues = {dialogue_id(c) for c in prepared["train"]}
    held_out = {dialogue_id(c) for s in ("validation", "test") for c in prepared[s]}
    idmap = build_idmap(catalog, "atomic")
    ds = task_examples("conversation->item", catalog, idmap, {"conversations": dialogues}, DataConfig(dataset="redial"))
    turn_dialogue = {t.id: dialogue_id(t) for t in all_recommender_turns(dialogues)}
    used = {turn_dialogue[s] for s in ds["source_id"]}
    assert used and used <= train_dialogues
    assert not used & held_out
