"""direct_from_config options: the conversation window the model was trained on (recipe data.max_messages, read
from the manifest), length normalisation of beam scores, and bfloat16 inference."""

from __future__ import annotations

import pytest
import torch

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message
from dlsearch.data.ids import build_idmap
from dlsearch.decoding.generate import conversation_prompt
from dlsearch.app.strategies import direct_from_config

from decoding_fixtures import make_model, make_tokenizer  # noqa: E402

TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Balto (1995)"]
CATALOG = Catalog([Item(str(100 + i), t) for i, t in enumerate(TITLES)])
CONV = Conversation("c1", [Message("user", "first message about @100"), Message("assistant", "second"),
                           Message("user", "third, something like Heat?")], targets=["103"])


def _model_dir(tmp_path, recipe):
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.manifest import write_manifest

    tok = make_tokenizer()
    model = make_model(len(tok), seed=3, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    idmap = build_idmap(CATALOG, "random", seed=0)
    write_manifest(tmp_path / "model", catalog=CATALOG, idmap=idmap, tokenizer=tok, base_model="test:tiny",
                   extra={"recipe": recipe} if recipe else None)
    build_index(CATALOG, idmap, tok, mode="whole").save(tmp_path / "trie")
    return tmp_path / "model", tmp_path / "trie"


def test_conversation_prompt_keeps_last_messages():
    full = conversation_prompt(CONV, CATALOG)
    last = conversation_prompt(CONV, CATALOG, max_messages=1)
    assert "Toy Story" in full and "first message" in full
    assert "first message" not in last and "second" not in last and "third, something like Heat?" in last


@pytest.mark.parametrize("window", [None, 1])
def test_direct_search_renders_the_trained_window(tmp_path, window):
    model_dir, trie = _model_dir(tmp_path, {"data": {"max_messages": window}})
    search = direct_from_config(catalog=CATALOG, model_dir=str(model_dir), index=str(trie), beams=5)
    assert search.max_messages == window
    seen = []
    engine = search.search_engine
    real = engine.search
    engine.search = lambda prompts, k, **kw: (seen.extend(prompts), real(prompts, k, **kw))[1]
    scores, rows = search.search([CONV], 3)
    assert seen == [conversation_prompt(CONV, CATALOG, engine.tokenizer, max_messages=window)]
    assert ("first message" in seen[0]) == (window is None)
    assert CATALOG.index("100") not in rows[0].tolist()  # @100 is mentioned: masked out


def test_direct_search_without_recipe_uses_whole_conversation(tmp_path):
    model_dir, trie = _model_dir(tmp_path, None)
    assert direct_from_config(catalog=CATALOG, model_dir=str(model_dir), index=str(trie), beams=5).max_messages is None


def test_length_penalty_and_bfloat16(tmp_path):
    model_dir, trie = _model_dir(tmp_path, None)
    fp32 = direct_from_config(catalog=CATALOG, model_dir=str(model_dir), index=str(trie), beams=5)
    bf16 = direct_from_config(catalog=CATALOG, model_dir=str(model_dir), index=str(trie), beams=5, length_penalty=1.0,
                              dtype="bfloat16")
    assert bf16.search_engine.length_penalty == 1.0 and fp32.search_engine.length_penalty == 0.0
    assert next(bf16.search_engine.model.parameters()).dtype == torch.bfloat16
    s32, r32 = fp32.search([CONV], 3)
    s16, r16 = bf16.search([CONV], 3)
    assert s16.dtype == s32.dtype and (r16 >= 0).all() and (r32 >= 0).all()
    with pytest.raises(ValueError, match="dtype"):
        direct_from_config(catalog=CATALOG, model_dir=str(model_dir), index=str(trie), dtype="float16x")


def test_generate_renders_the_trained_window_and_length(tmp_path, monkeypatch):
    # regression: `dlsearch generate` rendered whole conversations for a model trained on the last N messages (only
    # the router read the window), and an adapter's trained max_length was looked up in its base's manifest
    from types import SimpleNamespace

    from dlsearch.cli import main
    from dlsearch.data.formats import save_conversations
    from dlsearch.decoding.direct import DirectSearch, trained_max_length

    model_dir, trie = _model_dir(tmp_path, {"data": {"max_messages": 1}})
    save_conversations(tmp_path / "c.jsonl", [CONV])
    CATALOG.save_jsonl(tmp_path / "catalog.jsonl")
    seen = []
    real = DirectSearch.search_with_stats
    monkeypatch.setattr(DirectSearch, "search_with_stats", lambda self, q, k, **kw: (seen.extend(q), real(self, q, k, **kw))[1])
    assert main(["generate", "--model", str(model_dir), "--index", str(trie), "--input", str(tmp_path / "c.jsonl"),
                 "--catalog", str(tmp_path / "catalog.jsonl"), "--beams", "5", "--k", "3", "--out", str(tmp_path / "p.jsonl")]) == 0
    assert len(seen) == 1 and "third, something like Heat?" in seen[0] and "first message" not in seen[0]
    # the adapter case: the weights' dir (the base) records no length policy, the fine-tuned dir does
    import json

    man = json.loads((model_dir / "manifest.json").read_text())
    man["stage"] = {"length_policy": {"max_length": 40}}
    (model_dir / "manifest.json").write_text(json.dumps(man))
    base_like = SimpleNamespace(name_or_path=str(tmp_path / "elsewhere"), config=SimpleNamespace(max_position_embeddings=8192))
    assert trained_max_length(base_like) == 8192 and trained_max_length(base_like, model_dir) == 40


def test_direct_search_reads_the_window_of_the_dir_its_weights_came_from(tmp_path):
    # regression: DirectSearch(model, ...) without model_dir read the trained max_length from the weights' dir but not
    # data.max_messages, so a merged fine-tuned model loaded as it is rendered whole conversations
    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import TrieIndex
    from dlsearch.finetune.loading import load_model

    model_dir, trie = _model_dir(tmp_path, {"data": {"max_messages": 1}})
    model, tok, _ = load_model(model_dir, catalog=CATALOG)
    index = TrieIndex.load(trie, tokenizer=tok, catalog_hash=CATALOG.content_hash())
    assert DirectSearch(model, tok, index, CATALOG, beams=5).max_messages == 1
    assert "first message" not in DirectSearch(model, tok, index, CATALOG, beams=5).prompt(CONV)
    bare, _ = _model_dir(tmp_path / "bare", None)  # a manifest without a recipe: whole conversations
    model, tok, _ = load_model(bare, catalog=CATALOG)
    assert DirectSearch(model, tok, index, CATALOG, beams=5, model_dir=bare).max_messages is None


def test_a_raw_string_query_is_warned_about(tmp_path):
    # a bare request string is fed to the model as written (no task template); it ranked items by chance on ReDial
    import warnings

    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import TrieIndex
    from dlsearch.finetune.loading import load_model

    model_dir, trie = _model_dir(tmp_path, None)
    model, tok, _ = load_model(model_dir, catalog=CATALOG)
    search = DirectSearch(model, tok, TrieIndex.load(trie, tokenizer=tok, catalog_hash=CATALOG.content_hash()), CATALOG, beams=5)
    with pytest.warns(UserWarning, match=r"1 string\(s\) that are not rendered prompts \(e.g. 'a scary film please'"):
        search.search(["a scary film please", search.prompt(CONV)], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search.search([search.prompt(CONV), CONV], 3)
