"""Ids on a real tokenizer (SmolLM2, imported by `dlsearch model import`): over the WHOLE ReDial catalog, the trie
path of every item is exactly the token sequence fine-tuning teaches after the chat template's generation prompt
(prompt and prompt + completion + EOS tokenized as trl's SFTTrainer does), for title ids (display titles) and for
semantic-style ids added as whole tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.data.prompts import apply_chat_template, make_completion, prompt_for_context
from dlsearch.data.redial import load_redial_movies
from dlsearch.decoding.index import build_index
from dlsearch.decoding.item_tokens import chat_completion
from dlsearch.finetune.loading import load_tokenizer
from dlsearch.finetune.model_factory import id_tokens


@pytest.fixture(scope="module")
def redial() -> Catalog:
    return load_redial_movies()


def trained_completions(tokenizer, catalog: Catalog, idmap: IdMap) -> dict[str, list[int]]:
    """item id -> completion tokens as trl computes them: tokenize(prompt) and tokenize(prompt + completion + EOS),
    the completion starts where they diverge (the prompt must be a prefix here)."""
    prompt = apply_chat_template(tokenizer, prompt_for_context("conversation->item", "User: a scary movie, please"))
    p_ids = tokenizer(prompt)["input_ids"]
    texts = [prompt + chat_completion(tokenizer, make_completion(idmap.code(i))) + tokenizer.eos_token for i in catalog.ids]
    out = {}
    for i, ids in zip(catalog.ids, tokenizer(texts)["input_ids"]):
        assert ids[: len(p_ids)] == p_ids, idmap.code(i)
        out[i] = ids[len(p_ids):]
    return out


def trie_paths(index) -> dict[str, list[int]]:
    seg = index.segments[0]
    seqs, lens = seg.trie.sequences()
    return {iid: [int(t) for t in seqs[r, : lens[r]]] + [index.end_token_id] for r, iid in enumerate(seg.item_ids)}


def test_title_ids_trie_paths_equal_the_trained_tokens_on_the_whole_redial_catalog(smollm2_dir: Path, redial: Catalog) -> None:
    tok = load_tokenizer(smollm2_dir)
    idmap = build_idmap(redial, "title")
    assert len(redial) == 6924 and idmap.code(redial.ids[0]) == " ".join(redial.items[0].title.split())
    paths = trie_paths(build_index(redial, idmap, tok))
    want = trained_completions(tok, redial, idmap)
    wrong = [idmap.code(i) for i in redial.ids if paths[i] != want[i]]
    assert not wrong, (len(wrong), wrong[:5])
    # titles keep make_completion's leading space after SmolLM2's "assistant\n" (no merge): " Toy Story (1995)"
    sample = redial.ids[::50]
    assert all(chat_completion(tok, make_completion(idmap.code(i))) == make_completion(idmap.code(i)) for i in sample)


def test_semantic_ids_as_added_tokens_trie_paths_equal_the_trained_tokens(smollm2_dir: Path, redial: Catalog) -> None:
    """Codes of whole added tokens (what init_pretrained_model adds, mean-initialised); a 3-level code per item."""
    tok = load_tokenizer(smollm2_dir)
    n = len(redial)
    codes = {iid: f"<a_{k % 64}><b_{(k // 64) % 64}><c_{k // 4096}>" for k, iid in enumerate(redial.ids)}
    special = sorted({t + ">" for c in codes.values() for t in c.split(">") if t})
    idmap = IdMap(scheme="semantic", codes=codes, catalog_hash=redial.content_hash(), special_tokens=special)
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in id_tokens(idmap)])
    paths = trie_paths(build_index(redial, idmap, tok))
    want = trained_completions(tok, redial, idmap)
    assert all(paths[i] == want[i] for i in redial.ids)
    # Regression: the leading space merged with the template's "\n" (ItemTokenizationError); it is dropped for these
    # codes in training and in the trie alike, so each path is the 3 code tokens and EOS.
    assert n == 6924 and {len(p) for p in paths.values()} == {4}
    assert chat_completion(tok, make_completion(codes[redial.ids[0]])) == codes[redial.ids[0]]
