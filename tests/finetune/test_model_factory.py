"""Model factory: catalog-trained tokenizer with whole id tokens; from-scratch Llama; pretrained dir + id tokens."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.data.prompts import ITEM_END, ITEM_START
from dlsearch.finetune.config import ModelSize, TokenizerConfig
from dlsearch.finetune.loading import init_pretrained_model
from dlsearch.finetune.model_factory import add_id_tokens, init_scratch_model

TINY = ModelSize(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "Casino (1995)", "Sabrina (1995)", "Balto (1995)"]


def catalog() -> Catalog:
    return Catalog([Item(id=str(i + 1), title=t, concepts=("Comedy", "Drama")) for i, t in enumerate(TITLES)])


def semantic_like(cat: Catalog) -> IdMap:
    """A stand-in for the semantic scheme: codes made of special tokens <a_i><b_j>."""
    codes = {it.id: f"<a_{n % 3}><b_{n // 3}>" for n, it in enumerate(cat)}
    special = sorted({f"<a_{n % 3}>" for n in range(len(cat))} | {f"<b_{n // 3}>" for n in range(len(cat))})
    return IdMap(scheme="semantic", codes=codes, catalog_hash=cat.content_hash(), special_tokens=special)


def test_scratch_model_dir_loads_with_auto_classes_and_keeps_id_tokens_whole(tmp_path: Path) -> None:
    cat = catalog()
    idmap = semantic_like(cat)
    out = init_scratch_model(cat, idmap, TINY, TokenizerConfig(vocab_size=300, min_frequency=1), tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.bos_token == "<s>"
    for t in [ITEM_START, ITEM_END, *idmap.special_tokens]:
        assert tok.tokenize(t) == [t]
    ids = tok(" <a_1><b_0>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["<a_1>", "<b_0>"]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "<a_1><b_0>"  # id tokens survive decoding
    toks = tok.tokenize(" 1234")  # split_digits: every digit is its own token, whatever carries the leading space
    assert toks[-4:] == ["1", "2", "3", "4"] and not any(c.isdigit() for t in toks[:-4] for c in t)
    man = json.loads((out / "manifest.json").read_text())
    assert man["base_model"] == "scratch:scratch" and man["id_scheme"] == "semantic"


def test_pretrained_dir_gets_id_tokens_initialized_from_their_text(tmp_path: Path) -> None:
    cat = catalog()
    plain = build_idmap(cat, "random")  # no special tokens: the "pretrained" model knows none of <a_i>
    pre = init_scratch_model(cat, plain, TINY, TokenizerConfig(vocab_size=300, min_frequency=1), tmp_path / "pre")
    tok0 = AutoTokenizer.from_pretrained(pre)
    emb0 = AutoModelForCausalLM.from_pretrained(pre).get_input_embeddings().weight.detach().clone()

    idmap = semantic_like(cat)
    out = init_pretrained_model(cat, idmap, pre, tmp_path / "post")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == len(tok) == len(tok0) + len(idmap.special_tokens)
    assert torch.equal(emb[: len(tok0)], emb0)  # old rows untouched
    for t in idmap.special_tokens:
        pieces = tok0(t, add_special_tokens=False)["input_ids"]
        assert torch.allclose(emb[tok.convert_tokens_to_ids(t)], emb0[pieces].mean(0), atol=1e-6)
    assert add_id_tokens(model, tok, idmap) == []  # idempotent
