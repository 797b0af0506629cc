"""Splits: by dialogue and leave-one-out; the leakage checkers catch a deliberately leaky split."""

import pytest

from dlsearch.data.splits import LeakageError, check_conversation_splits, check_history_splits, split_conversations, split_histories
from dlsearch.data.turns import all_recommender_turns


def test_conversation_split_by_dialogue(redial):
    turns = all_recommender_turns(redial[1])
    splits = split_conversations(turns, seed=0)
    n_dialogues = {s: len({t.meta["dialogue_id"] for t in v}) for s, v in splits.items()}
    assert sum(n_dialogues.values()) == len({t.meta["dialogue_id"] for t in turns})
    assert abs(n_dialogues["train"] / sum(n_dialogues.values()) - 0.8) < 0.01
    check_conversation_splits(splits)
    assert split_conversations(turns, seed=0)["test"][0].id == splits["test"][0].id
    assert split_conversations(turns, seed=1)["test"][0].id != splits["test"][0].id
    leaky = {**splits, "test": splits["test"] + splits["train"][:1]}  # one training turn also in test
    with pytest.raises(LeakageError, match="appears in splits"):
        check_conversation_splits(leaky)


def test_history_leave_one_out(movielens):
    histories = movielens[1]
    splits = split_histories(histories)
    check_history_splits(splits)
    user = "1"
    assert splits["test"][user][-1] == histories[user][-1] and splits["validation"][user][-1] == histories[user][-2]
    assert splits["train"][user] == histories[user][:-2]
    leaky = {**splits, "train": {**splits["train"], user: histories[user]}}  # training sees the held-out items
    with pytest.raises(LeakageError, match="user '1'"):
        check_history_splits(leaky)
