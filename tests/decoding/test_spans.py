"""Items inside free text (span mode): the constraint's start state, parse_spans, refusals at build time."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.ids import build_idmap
from dlsearch.decoding.constraint import TrieConstraint
from dlsearch.decoding.index import build_index
from dlsearch.decoding.item_tokens import ItemTokenizationError
from dlsearch.decoding.spans import generate_with_items, marker_ids, parse_spans

from decoding_fixtures import BothBackends, make_model, make_tokenizer

TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Grumpier Old Men (1995)"]
CATALOG = Catalog([Item(str(100 + i), t) for i, t in enumerate(TITLES)])
TOK = make_tokenizer()
MODEL = make_model(len(TOK), seed=5, eos=TOK.eos_token_id, pad=TOK.pad_token_id, bos=TOK.bos_token_id)
INDEX = build_index(CATALOG, build_idmap(CATALOG, "title"), TOK, mode="span")
START, END = marker_ids(TOK)


class Push(LogitsProcessor):
    """Pushes the given token at the given generated positions (the random model never writes markers itself)."""

    def __init__(self, width: int, at: dict[int, int]):
        self.width, self.at = width, at

    def __call__(self, input_ids, scores):
        tok = self.at.get(input_ids.shape[1] - self.width)
        if tok is not None:
            scores[:, tok] += 1000.0
        return scores


def test_prompt_ending_in_item_start_is_constrained():
    """A prompt that ends with <item> opens a span: the first generated tokens must name an item, then </item>."""
    proc = TrieConstraint(INDEX, eos_token_id=TOK.eos_token_id, item_start_id=START)
    ids = torch.tensor([TOK("I suggest <item>")["input_ids"]])
    s = proc(ids, torch.zeros(1, len(TOK)))
    allowed = set(torch.isfinite(s[0]).nonzero().flatten().tolist())
    assert allowed == set((INDEX.base.trie.root_child >= 0).nonzero()[0].tolist())
    replies = generate_with_items(MODEL, TOK, INDEX, ["I suggest <item>", "User: hello"], max_new_tokens=20,
                                  do_sample=False)
    first = replies[0]
    assert first.items and first.items[0].item_id in CATALOG and first.items[0].token_start == 0
    assert first.texts[0] == ""


def test_parse_spans_reads_past_a_generated_pad():
    """A <pad> written by the model inside free text is text, not the end of the reply: later items are kept."""
    prompt = "User: recommend two films\nAssistant:"
    width = TOK([prompt], return_tensors="pt")["input_ids"].shape[1]

    class PadThenTwoSpans(LogitsProcessor):  # a <pad> first, then a span, and a second one right after it closes
        def __call__(self, input_ids, scores):
            g = input_ids.shape[1] - width
            if g == 1:
                scores[:, TOK.pad_token_id] += 1000.0
            if g == 3 or (g > 3 and int(input_ids[0, -1]) == END):
                scores[:, START] += 1000.0
            return scores

    replies = generate_with_items(MODEL, TOK, INDEX, [prompt], max_new_tokens=60, logits_processor=[PadThenTwoSpans()],
                                  do_sample=False)
    assert len(replies[0].items) >= 2 and all(it.item_id in CATALOG for it in replies[0].items)
    # EOS still ends the reply: nothing after it is parsed
    t = INDEX.base.trie
    item = [int(t.child_token[0])]  # any one-token prefix; not needed complete, it follows EOS
    r = parse_spans([TOK.eos_token_id, START, *item, END], INDEX, TOK, start_id=START, end_id=END,
                    stop_ids=(TOK.eos_token_id,))
    assert r.items == [] and not r.incomplete


def test_code_containing_item_marker_refused_at_build():
    cat = Catalog([Item("1", "Heat (1995)"), Item("2", "The <item> Show")])
    with pytest.raises(ItemTokenizationError, match="<item>"):
        build_index(cat, build_idmap(cat, "title"), TOK, mode="span")


def test_span_torch_backend_equals_numpy():
    """Span mode: free text, spans opened by the model or by the prompt, items, EOS; both backends agree at every
    step (greedy and sampling, a deny-list)."""
    prompts = ["I suggest <item>", "User: hello", "Assistant: try this", "User: recommend two films\nAssistant:"]
    enc = TOK(prompts, return_tensors="pt", padding=True)
    width = enc["input_ids"].shape[1]
    for seed, kw in ((0, {"do_sample": False}), (1, {"do_sample": True, "top_k": 0, "num_return_sequences": 3})):
        n = len(prompts) * kw.get("num_return_sequences", 1)
        proc = BothBackends(INDEX, eos_token_id=TOK.eos_token_id, item_start_id=START,
                            rows_per_query=kw.get("num_return_sequences", 1), deny=[["102"], None, None, ["100"]])
        torch.manual_seed(seed)
        out = MODEL.generate(**enc, max_new_tokens=30, pad_token_id=TOK.pad_token_id, eos_token_id=TOK.eos_token_id,
                             logits_processor=[Push(width, {2: START, 9: START, 20: TOK.eos_token_id}), proc], **kw)
        assert proc.steps >= 20 and out.shape[0] == n
        assert (out[:, width:] == END).any()  # spans were closed: the item path was exercised


def test_parse_spans_names_the_live_item_of_a_reused_retired_code():
    """A retired base item whose code an added (delta) item now holds: the span names the added item (regression:
    parse_spans walked the base segment first and returned the retired id)."""
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), TOK, mode="span")
    code = index.code("103")
    index.retire_items(["103"])
    index.add_items(["200"], [code])
    reply = parse_spans([START, *code, END], index, TOK, start_id=START, end_id=END)
    assert [it.item_id for it in reply.items] == ["200"]
    index.retire_items(["200"])  # no live item holds the code any more: the span stays text
    assert parse_spans([START, *code, END], index, TOK, start_id=START, end_id=END).items == []
