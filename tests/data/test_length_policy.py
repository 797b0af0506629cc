"""Length policy: contexts cut from the left (whole messages, then tokens), completions never cut, the same prompt
at training and inference, counts of cut and dropped examples, an option to make them an error."""

from __future__ import annotations

import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.examples import conversation_rows, history_rows
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.ids import build_idmap
from dlsearch.data.prompts import LengthBudget, conversation_prompt, fit_context_prompt
from tests.decoding_fixtures import make_tokenizer

MAX_LENGTH = 96


def _n(tok, text):
    return len(tok(text, add_special_tokens=True)["input_ids"])


def test_training_and_inference_cut_redial_prompts_identically(redial):
    from dlsearch.data.turns import all_recommender_turns
    from dlsearch.decoding.generate import conversation_prompt as inference_prompt
    from dlsearch.finetune.memorization import code_token_budget

    catalog, dialogues = redial
    turns = all_recommender_turns(dialogues)[:300]
    idmap = build_idmap(catalog, "sequential")
    tok = make_tokenizer()
    reserve = code_token_budget(tok, idmap)
    budget = LengthBudget(tok, MAX_LENGTH, reserve)
    rows = conversation_rows(turns, catalog, idmap, length=budget)
    counts = budget.counts["conversation->item"]
    assert counts["cut"] > 100 and counts["kept"] + counts["cut"] + counts["dropped"] == sum(len(t.targets) for t in turns)
    by_turn = {t.id: t for t in turns}
    for r in rows:
        turn = by_turn[r["source_id"]]
        assert r["completion"] == " " + idmap.code(r["item_id"])  # never cut
        assert _n(tok, r["prompt"]) + len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + 1 <= MAX_LENGTH
        assert inference_prompt(turn, catalog, tok, max_length=MAX_LENGTH, reserve=reserve) == r["prompt"]
        full = conversation_prompt(turn, catalog)
        if r["prompt"] != full:  # cut from the LEFT: the most recent context survives
            last = full.split("\n### Answer:")[0].splitlines()[-1]
            assert r["prompt"].split("\n### Answer:")[0].endswith(last[-20:])


def test_whole_messages_first_then_tokens_then_dropped():
    tok = make_tokenizer()
    parts = ["User: " + "old words " * 30, "Assistant: fine", "User: the newest request"]
    full, status = fit_context_prompt("conversation->item", parts, tok, 10_000)
    assert status == "kept" and "old words" in full
    p, status = fit_context_prompt("conversation->item", parts, tok, _n(tok, full) - 1)
    assert status == "cut" and "old words" not in p and "Assistant: fine" in p and "newest request" in p
    head = _n(tok, fit_context_prompt("conversation->item", [""], tok, 10_000)[0])
    p, status = fit_context_prompt("conversation->item", parts, tok, head + 3)
    assert status == "cut" and "Assistant" not in p and _n(tok, p) <= head + 3
    assert fit_context_prompt("conversation->item", parts, tok, head - 5) == (None, "dropped")


def test_history_rows_cut_whole_items_and_count():
    cat = Catalog([Item(str(i), f"Item number {i} with a long descriptive title") for i in range(30)])
    idmap = build_idmap(cat, "sequential")
    tok = make_tokenizer()
    budget = LengthBudget(tok, 240)
    rows = history_rows({"u": [(str(i), i) for i in range(30)]}, cat, idmap, split="test", context=20, length=budget)
    (row,) = rows
    assert budget.counts["history->next_item"]["cut"] == 1 and "Item number 28" in row["prompt"] and "Item number 9 " not in row["prompt"]


def test_length_errors_option_refuses_a_stage():
    from dlsearch.finetune.config import RecipeConfig, StageConfig
    from dlsearch.finetune.train import _check_length

    cfg, stage = RecipeConfig(), StageConfig()
    counts = {"conversation->item": {"kept": 90, "cut": 8, "dropped": 2}}
    with pytest.warns(UserWarning, match="8 of 100 examples"):
        assert _check_length(counts, stage, cfg) == counts
    cfg.data.length_errors = True
    with pytest.raises(ValueError, match="length_errors"):
        _check_length(counts, stage, cfg)
    assert _check_length({"title->id": {"kept": 1000, "cut": 0, "dropped": 1}}, stage, cfg)  # 0.1 %: fine
