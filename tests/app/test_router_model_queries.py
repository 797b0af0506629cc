"""The router's model-written inputs (configs/recommend.yaml `query_from: model`, `concepts_from: model`): a tiny
model taught the conversation->query and conversation->concepts examples of one conversation (rows from
data.examples.conversation_rows, the training rows finetune uses) writes them at recommend time, and they reach the
BM25 / concept backends built by dlsearch.app.recommend.build_router, which rank the items they name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from dlsearch.app.recommend import build_router, check_config
from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.examples import conversation_rows, search_query
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.ids import build_idmap
from dlsearch.finetune.loading import load_model
from dlsearch.finetune.manifest import write_manifest
from dlsearch.retrieval.bm25 import build_bm25
from dlsearch.retrieval.build import build_concept, load_concept_search
from dlsearch.retrieval.generate import TaskGenerator

from decoding_fixtures import CORPUS, make_model, make_tokenizer

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog([
    Item("1", "Toy Story (1995)", concepts=("Animation", "Comedy")),
    Item("2", "Heat (1995)", concepts=("Crime", "Thriller")),
    Item("3", "Balto (1995)", concepts=("Animation", "Adventure")),
    Item("4", "Sabrina (1995)", concepts=("Comedy", "Romance")),
    Item("5", "GoldenEye (1995)", concepts=("Action", "Spy")),
    Item("6", "Casino (1995)", concepts=("Crime", "Drama")),
])
# no title word in the text: BM25 on the conversation itself cannot find the target, only the model's query can
CONV = Conversation("c1", [Message("user", "I want a tense film about a bank robbery crew and an obsessed detective")],
                    targets=["2"])
TRAIN_STEPS = 40  # loss ~0.002 at lr 1e-2: both answers are written exactly (checked below)


def _teach(model, tok, rows) -> None:
    """Overfit the tiny model on prompt+completion+EOS, loss on the completion tokens only (one thread: on a
    loaded 2-core machine more threads spin-wait and make it ten times slower)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seqs = []
    for r in rows:
        p = tok(r["prompt"])["input_ids"]
        c = tok(r["prompt"] + r["completion"])["input_ids"][len(p):] + [tok.eos_token_id]
        seqs.append((torch.tensor([p + c]), torch.tensor([[-100] * len(p) + c])))
    model.train()
    for _ in range(TRAIN_STEPS):
        for ids, labels in seqs:
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("router-model")
    idmap = build_idmap(CATALOG, "sequential")
    rows = [row for task in ("conversation->query", "conversation->concepts") for row in conversation_rows([CONV], CATALOG, idmap, task)]
    tok = make_tokenizer(CORPUS + [r["prompt"] + r["completion"] for r in rows], vocab_size=400)
    model = make_model(len(tok), seed=0, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    _teach(model, tok, rows)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    write_manifest(d / "model", catalog=CATALOG, idmap=idmap, tokenizer=tok, base_model="test:tiny")
    CATALOG.save_jsonl(d / "catalog.jsonl")
    build_concept(CATALOG, d / "concept", factory="Flat", cache_dir=str(d / "cache"))
    cfg = yaml.safe_load((REPO / "configs" / "recommend.yaml").read_text())
    cfg.update(catalog=str(d / "catalog.jsonl"), model_dir=str(d / "model"), cache_dir=str(d / "cache"))
    cfg["policy"]["link_mentions"] = False
    return d, cfg


def _only(cfg: dict, name: str, settings: dict) -> dict:
    base = {n: {**sc, "enabled": False} for n, sc in cfg["strategies"].items()}
    return check_config({**cfg, "strategies": {**base, name: {**cfg["strategies"][name], "enabled": True, **settings}}}, "test")


def test_model_writes_what_it_was_taught(setup):
    d, _ = setup
    gen = TaskGenerator(*load_model(d / "model", catalog=CATALOG)[:2], CATALOG)
    assert gen.query(CONV) == search_query(CATALOG["2"]) == "Heat Crime Thriller"
    assert gen.concepts(CONV) == ["Crime", "Thriller"]


def test_bm25_query_from_model(setup):
    d, cfg = setup
    by_model = build_router(_only(cfg, "bm25", {"query_from": "model"})).recommend_many([CONV], 3)[0]
    # exactly BM25's ranking of the model's query
    _, rows = build_bm25(CATALOG).search(["Heat Crime Thriller"], 3)
    assert [s.item_id for s in by_model.items] == [CATALOG.items[r].id for r in rows[0] if r >= 0]
    assert by_model.items[0].item_id == "2" and not by_model.degraded
    by_text = build_router(_only(cfg, "bm25", {"query_from": "conversation"})).recommend_many([CONV], 3)[0]
    assert "2" not in [s.item_id for s in by_text.items]  # the conversation text alone does not find it


def test_concept_search_concepts_from_model(setup):
    d, cfg = setup
    pred = build_router(_only(cfg, "concept", {"concepts_from": "model", "snap": False, "index": str(d / "concept")})).recommend_many([CONV], 3)[0]
    _, rows = load_concept_search(d / "concept", CATALOG, cache_dir=str(d / "cache")).search([["Crime", "Thriller"]], 3)
    assert [s.item_id for s in pred.items] == [CATALOG.items[r].id for r in rows[0] if r >= 0]
    assert pred.items[0].item_id == "2" and not pred.degraded  # Heat is the one item with both concepts
    # with concepts_from: meta and no concepts in the conversation, the strategy has nothing to search
    none = build_router(_only(cfg, "concept", {"concepts_from": "meta", "snap": False, "index": str(d / "concept")})).recommend_many([CONV], 3)[0]
    assert none.items == []


def test_task_generator_renders_the_trained_window(setup, tmp_path):
    # regression: the router's query/concept writer rendered whole conversations for a model trained on the last N
    # messages (bench scripts passed the window by hand; build_router did not)
    import json
    import shutil

    from dlsearch.app.recommend import task_generator

    d, _ = setup
    windowed = tmp_path / "model"
    shutil.copytree(d / "model", windowed)
    man = json.loads((windowed / "manifest.json").read_text())
    man["recipe"] = {**(man.get("recipe") or {}), "data": {**((man.get("recipe") or {}).get("data") or {}), "max_messages": 1}}
    (windowed / "manifest.json").write_text(json.dumps(man))
    conv = Conversation("c2", [Message("user", "an old message about Toy Story"), Message("assistant", "ok"),
                               Message("user", "I want a tense film about a bank robbery crew")])
    whole = task_generator(d / "model", CATALOG).prompt("conversation->query", conv)
    last = task_generator(windowed, CATALOG).prompt("conversation->query", conv)
    assert "an old message" in whole and "an old message" not in last and "bank robbery crew" in last
