"""End to end: a tiny tokenizer + random Llama saved as a model dir, `dlsearch index build --kind trie`,
`dlsearch generate`, DirectSearch's search shape, items inside free text, title matching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import LogitsProcessor

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message, load_predictions, save_conversations
from dlsearch.data.ids import build_idmap
from dlsearch.decoding.direct import DirectSearch
from dlsearch.decoding.generate import conversation_prompt, recommend_for_conversation
from dlsearch.decoding.index import TrieIndex, build_index
from dlsearch.decoding.spans import generate_with_items, marker_ids
from dlsearch.finetune.manifest import write_manifest
from dlsearch.cli import main

from decoding_fixtures import make_model, make_tokenizer

TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Grumpier Old Men (1995)",
          "Waiting to Exhale (1995)", "Father of the Bride Part II (1995)", "Sabrina (1995)", "Tom and Huck (1995)",
          "Sudden Death (1995)", "GoldenEye (1995)", "Balto (1995)"]
CATALOG = Catalog([Item(str(100 + i), t) for i, t in enumerate(TITLES)])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tok = make_tokenizer()
    model = make_model(len(tok), seed=3, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    # the model dir's manifest, idmap.json and catalog.jsonl as finetune writes them (not a hand-written stand-in)
    write_manifest(d, catalog=CATALOG, idmap=build_idmap(CATALOG, "random", seed=0), tokenizer=tok, base_model="test:tiny")
    return d


def test_cli_index_build_and_generate(tmp_path, model_dir):
    CATALOG.save_jsonl(tmp_path / "catalog.jsonl")
    idmap = build_idmap(CATALOG, "random", seed=0)
    idmap.save(tmp_path / "idmap.json")
    assert main(["index", "build", "--kind", "trie", "--catalog", str(tmp_path / "catalog.jsonl"), "--idmap",
                 str(tmp_path / "idmap.json"), "--model", str(model_dir), "--out", str(tmp_path / "trie")]) == 0
    convs = [Conversation(f"c{i}", [Message("user", f"I liked @{100 + i}, what next?")], targets=[str(101 + i)])
             for i in range(5)]
    save_conversations(tmp_path / "convs.jsonl", convs)
    assert main(["generate", "--model", str(model_dir), "--index", str(tmp_path / "trie"), "--input",
                 str(tmp_path / "convs.jsonl"), "--beams", "6", "--k", "4", "--out", str(tmp_path / "preds.jsonl")]) == 0
    # Conversation objects as queries: the conversation->item prompt, mentioned items masked
    from dlsearch.finetune.loading import load_model

    model, tok, _ = load_model(model_dir, catalog=CATALOG)
    index = TrieIndex.load(tmp_path / "trie", tokenizer=tok, catalog_hash=CATALOG.content_hash())
    search = DirectSearch(model, tok, index, CATALOG, beams=6)
    scores, rows = search.search(convs[:2], 4)
    assert rows.shape == (2, 4) and (rows >= 0).all() and CATALOG.index("100") not in rows[0]
    preds = load_predictions(tmp_path / "preds.jsonl")
    assert [p.id for p in preds] == [c.id for c in convs]
    for p, c in zip(preds, convs):
        got = [s.item_id for s in p.items]
        assert len(got) == 4 and len(set(got)) == 4 and all(g in CATALOG for g in got)
        assert c.mentioned()[0] not in got  # mentioned items are excluded by a query-time mask
        assert [s.rank for s in p.items] == [1, 2, 3, 4] and all(np.diff([s.score for s in p.items]) <= 0)
    # killed after two batches, mid-way through the third line: --resume keeps the two, cuts the torn one, does the rest
    full = (tmp_path / "preds.jsonl").read_text().splitlines()
    (tmp_path / "preds.jsonl").write_text(full[0] + "\n" + full[1] + "\n" + full[2][:10])
    assert main(["generate", "--model", str(model_dir), "--index", str(tmp_path / "trie"), "--input", str(tmp_path / "convs.jsonl"),
                 "--beams", "6", "--k", "4", "--batch-size", "2", "--out", str(tmp_path / "preds.jsonl"), "--resume"]) == 0
    assert [json.loads(line)["id"] for line in (tmp_path / "preds.jsonl").read_text().splitlines()] == [c.id for c in convs]
    assert (tmp_path / "preds.jsonl").read_text().splitlines()[:2] == full[:2]


def test_direct_search_shape_and_allow_list(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), tok)
    search = DirectSearch(model, tok, index, CATALOG, beams=8, batch_size=2)
    prompts = [conversation_prompt(Conversation("x", [Message("user", t)]), CATALOG) for t in ("hi", "a film", "x")]
    scores, rows = search.search(prompts, k=5)
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and scores.shape == rows.shape == (3, 5)
    assert (rows >= 0).all() and (rows < len(CATALOG)).all() and np.isfinite(scores).all()
    scores, rows = search.search(prompts, k=5, allow=[["100", "103"]] * 3)  # only 2 allowed: padded with -1 / -inf
    assert set(rows[:, :2].ravel()) <= {0, 3} and (rows[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
    pred = recommend_for_conversation(Conversation("c", [Message("user", "I liked @100")]), search, k=3)
    assert len(pred.items) == 3 and "100" not in [s.item_id for s in pred.items]


def test_items_inside_free_text(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), tok, mode="span")
    start_id, end_id = marker_ids(tok)

    class OpenSpans(LogitsProcessor):  # the random model never opens a span by itself: push it to, twice
        def __init__(self, width):
            self.width = width

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - self.width in (2, 16):
                scores[:, start_id] += 1000.0
            return scores

    prompts = ["User: recommend two films\nAssistant:", "User: hi\nAssistant:"]
    width = tok(prompts, return_tensors="pt", padding=True)["input_ids"].shape[1]
    replies = generate_with_items(model, tok, index, prompts, max_new_tokens=40, deny=[["102"], None],
                                  logits_processor=[OpenSpans(width)], do_sample=False)
    for q, r in enumerate(replies):
        assert len(r.items) >= 1 and all(it.item_id in CATALOG for it in r.items)
        assert len(r.texts) == len(r.items) + 1 and all(it.score <= 0 for it in r.items)
        if q == 0:
            assert "102" not in [it.item_id for it in r.items]
        assert "<item>" in r.render(lambda i: CATALOG[i].title)


def test_title_matching():
    """Output text back to items: data/titles.py's lookups and retrieval/mentions.py's linker (which replaced
    decoding/fuzzy.py's FuzzyMatcher: one title matcher)."""
    from dlsearch.data.titles import titles_of
    from dlsearch.retrieval.mentions import MentionLinker

    t = titles_of(CATALOG)
    assert t.exact("the matrix (1999)") == t.exact("Matrix, The (1999)") == [CATALOG.index("103")]
    assert t.lookup("The Matrx (1999)") == [("103", 1)]
    assert t.lookup("jumanji") == [("101", 0)]  # title without its year
    assert t.lookup("completely different") == []
    found = MentionLinker(CATALOG).find("I loved Heat (1995) and also Balto, but not heathers")
    assert [f.item_id for f in found] == ["102", "111"]


def test_direct_search_checks_tokenizer_fingerprint(model_dir):
    """An index built with another tokenizer is refused by DirectSearch itself, not only by TrieIndex.load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dlsearch.decoding.index import IndexMismatchError

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    other = make_tokenizer(seed_text="Sudden Death GoldenEye Balto Sabrina")
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), other)
    with pytest.raises(IndexMismatchError, match="tokenizer"):
        DirectSearch(model, tok, index, CATALOG, beams=4)
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), tok)
    with pytest.raises(ValueError, match="max_new_tokens"):
        DirectSearch(model, tok, index, CATALOG, beams=4, max_new_tokens=2)


def test_direct_search_names_the_live_item_of_a_reused_retired_code(model_dir):
    """Retire an item, add another with its code: DirectSearch returns the added item's catalog row (regression: the
    rank step walked the base segment first and returned the retired item)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    catalog = Catalog(list(CATALOG) + [Item("200", "The Matrix Reloaded (2003)")])
    index = build_index(CATALOG, build_idmap(CATALOG, "title"), tok)
    code = index.code("103")
    index.retire_items(["103"])
    index.add_items(["200"], [code])
    search = DirectSearch(model, tok, index, catalog, beams=4)
    prompt = conversation_prompt(Conversation("x", [Message("user", "a film")]), CATALOG)
    scores, rows = search.search([prompt], k=2, allow=[["200"]])
    assert rows[0].tolist() == [catalog.index("200"), -1] and np.isfinite(scores[0, 0])
    with pytest.raises(ValueError, match="not in the catalog"):
        DirectSearch(model, tok, index, CATALOG, beams=4)  # "200" is live but CATALOG lacks it
