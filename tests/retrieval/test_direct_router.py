"""The router with the real direct search (decoding.DirectSearch on a tiny random model + trie), loaded from the
production recommend config, gated by a saved memorization figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message, load_predictions, save_conversations
from dlsearch.data.ids import build_idmap
from dlsearch.cli import main

from decoding_fixtures import make_model, make_tokenizer  # noqa: E402

TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Grumpier Old Men (1995)",
          "Waiting to Exhale (1995)", "Sabrina (1995)", "Balto (1995)"]
CATALOG = Catalog([Item(str(100 + i), t, concepts=("Drama",)) for i, t in enumerate(TITLES)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.manifest import write_manifest

    d = tmp_path_factory.mktemp("direct")
    tok = make_tokenizer()
    model = make_model(len(tok), seed=3, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    idmap = build_idmap(CATALOG, "random", seed=0)
    # the model dir's manifest, idmap.json and catalog.jsonl as finetune writes them (not a hand-written stand-in)
    write_manifest(d / "model", catalog=CATALOG, idmap=idmap, tokenizer=tok, base_model="test:tiny", extra={"kind": "model"})
    index = build_index(CATALOG, idmap, tok, mode="whole")
    index.save(d / "trie")
    CATALOG.save_jsonl(d / "catalog.jsonl")
    cfg = yaml.safe_load(open("configs/recommend.yaml"))
    cfg.update(catalog=str(d / "catalog.jsonl"), model_dir=str(d / "model"), cache_dir=str(d / "cache"))
    cfg["strategies"] = {"direct": {"enabled": True, "factory": "direct",
                                    "options": {"index": str(d / "trie"), "beams": 8}},
                         "bm25": {"enabled": True, "index": None}}
    (d / "recommend.yaml").write_text(yaml.safe_dump(cfg))
    save_conversations(d / "in.jsonl", [Conversation("c1", [Message("user", "I liked @100, something like Heat?")], exclude=["100"])])
    return d


def _mem(d, em):
    (d / "model" / "memorization.json").write_text(json.dumps({CATALOG.content_hash(): {
        "scheme": "random", "task": "title->id", "n_items": len(CATALOG), "exact_match": em, "valid_rate": 1.0, "step": 1,
        "measured_at": "2026-11-30T09:00:00Z"}}))


@pytest.mark.parametrize("em,expect", [(0.99, {"direct"}), (0.7, {"direct", "bm25"}), (0.1, {"bm25"})])
def test_recommend_cli_with_direct_search(setup, em, expect):
    _mem(setup, em)
    out = setup / f"preds-{em}.jsonl"
    assert main(["recommend", "--config", str(setup / "recommend.yaml"), "--input", str(setup / "in.jsonl"), "--out", str(out), "--k", "5"]) == 0
    pred = load_predictions(out)[0]
    used = {n for s in pred.items for n in s.strategy.split("+")}
    assert used <= expect and (used & expect)
    assert json.loads(Path(str(out) + ".decisions.jsonl").read_text().splitlines()[0])["used"] == sorted(expect, key=["direct", "bm25"].index)
    assert "100" not in {s.item_id for s in pred.items}  # excluded (masked inside beam search for direct)
    if expect == {"direct"}:
        assert len(pred.items) == 5 and all(s.strategy == "direct" for s in pred.items)
