"""The flat trie and its index: structure against a reference, persistence (memory-mapped), refusals, deltas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.ids import build_idmap
from dlsearch.decoding.fingerprint import tokenizer_fingerprint
from dlsearch.decoding.index import IndexMismatchError, TrieIndex, build_index, index_from_sequences
from dlsearch.decoding.item_tokens import ItemTokenizationError, item_token_ids
from dlsearch.decoding.trie import TokenTrie, TrieError, build_trie, pad_sequences

from decoding_fixtures import make_tokenizer


def walk(trie: TokenTrie, seq) -> int:
    node = np.zeros(1, dtype=np.int64)
    for t in seq:
        node = trie.child(node, np.array([t]))
    return int(node[0])


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=5).map(tuple), min_size=1, max_size=40, unique=True))
def test_trie_matches_reference(seqs):
    tokens, lengths = pad_sequences(seqs)
    trie, order = build_trie(tokens, lengths, 10)
    prefixes = {s[:k] for s in seqs for k in range(len(s) + 1)}
    assert trie.n_nodes == len(prefixes)  # one node per distinct prefix, root included
    for p in prefixes:
        node = walk(trie, p)
        assert node >= 0
        _, toks, _ = trie.allowed_edges(np.array([node]))
        assert list(toks) == sorted({s[len(p)] for s in seqs if len(s) > len(p) and s[:len(p)] == p})
        assert bool(trie.is_terminal(np.array([node]))[0]) == (p in set(seqs))
    for i, s in enumerate(seqs):  # item rows round-trip
        assert seqs[order[trie.item_of(np.array([walk(trie, s)]))[0]]] == s
    got, lens = trie.sequences()
    assert [tuple(got[r, :lens[r]]) for r in range(len(seqs))] == [seqs[o] for o in order]
    for p in prefixes:  # every one-token extension that is no prefix of an item walks off the trie
        assert all(walk(trie, p + (t,)) == -1 for t in range(10) if p + (t,) not in prefixes)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=5).map(tuple), min_size=1, max_size=40, unique=True))
def test_packed_key_sort_equals_column_sort(seqs):
    """The packed uint64 key path (rows that fit 64 bits, columns read back from the sorted key) builds the same
    arrays and row order as the lexsort path used for wide rows."""
    import dlsearch.decoding.trie as trie_mod

    tokens, lengths = pad_sequences(seqs)
    assert trie_mod._packed_bits(tokens.shape[1], 10) > 0
    packed, order_p = build_trie(tokens, lengths, 10)
    saved = trie_mod._packed_bits
    trie_mod._packed_bits = lambda width, vocab: 0
    try:
        wide, order_w = build_trie(tokens, lengths, 10)
    finally:
        trie_mod._packed_bits = saved
    assert np.array_equal(order_p, order_w) and packed.meta() == wide.meta()
    for name, a in packed.arrays().items():
        assert np.array_equal(a, wide.arrays()[name]) and a.dtype == wide.arrays()[name].dtype, name


def test_wide_rows_use_the_column_sort():
    """Rows too wide for one key (21-bit tokens x 4) still build: order and edges match a Python reference."""
    seqs = [(1_000_000, 5, 7, 9), (3, 2, 1), (1_000_000, 5, 7), (3, 2, 1, 2_000_000), (3,)]
    trie, order = build_trie(*pad_sequences(seqs), 2_000_001)
    assert [seqs[i] for i in order] == [(3,), (3, 2, 1), (1_000_000, 5, 7), (3, 2, 1, 2_000_000), (1_000_000, 5, 7, 9)]
    assert walk(trie, (3, 2, 1, 2_000_000)) > 0 and walk(trie, (3, 2, 1, 5)) == -1


def test_uint16_tokens_and_dense_root():
    trie, _ = build_trie(*pad_sequences([[1, 2], [40000, 3]]), 50000)
    assert trie.child_token.dtype == np.uint16 and trie.root_child.shape == (50000,)
    trie32, _ = build_trie(*pad_sequences([[1, 2], [70000, 3]]), 80000)
    assert trie32.child_token.dtype == np.int32


def test_duplicate_and_empty_sequences_refused():
    with pytest.raises(TrieError, match="same token sequence"):
        build_trie(*pad_sequences([[1, 2], [1, 2]]), 5, item_names=["a", "b"])
    with pytest.raises(TrieError, match="empty"):
        build_trie(*pad_sequences([[1], []]), 5)


def test_save_load_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [list(map(int, rng.integers(0, 999, size=rng.integers(1, 5)))) for _ in range(500)]
    seqs = [list(s) for s in dict.fromkeys(map(tuple, seqs))]
    index = index_from_sequences([f"i{i}" for i in range(len(seqs))], seqs, vocab_size=1000, end_token_id=999,
                                 manifest={"catalog_hash": "h1"})
    index.save(tmp_path / "idx")
    loaded = TrieIndex.load(tmp_path / "idx")
    assert isinstance(loaded.base.trie.child_token, np.memmap) and isinstance(loaded.base.trie.child_start, np.memmap)
    for s in seqs[:50]:
        a, b = walk(index.base.trie, s), walk(loaded.base.trie, s)
        assert a == b and loaded.base.item_ids[loaded.base.trie.item_of(np.array([b]))[0]] == \
            index.base.item_ids[index.base.trie.item_of(np.array([a]))[0]]
    assert loaded.manifest["catalog_hash"] == "h1" and loaded.manifest["format_version"] == 2


def _catalog(n=30):
    return Catalog([Item(str(i), f"Movie {i} (19{50 + i % 50})") for i in range(n)])


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_build_index_tokenizes_like_the_model(kind):
    tokenizer = make_tokenizer(kind=kind)
    cat = _catalog()
    idmap = build_idmap(cat, "random", seed=0)
    index = build_index(cat, idmap, tokenizer)
    # the tokens the model must emit are exactly the completion's tokens after the prompt
    from dlsearch.data.prompts import make_completion, prompt_for_item_task

    for item in list(cat)[:10]:
        ex = prompt_for_item_task("title->id", title=item.title, code=idmap.code(item.id))
        full = tokenizer(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"]
        prompt = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt
        node = walk(index.base.trie, full[len(prompt):])
        assert node > 0 and index.base.item_ids[index.base.trie.item_of(np.array([node]))[0]] == item.id
    assert index.end_token_id == tokenizer.eos_token_id
    assert index.manifest["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)


def test_wrong_tokenizer_refused(tmp_path, tokenizer):
    cat = _catalog()
    index = build_index(cat, build_idmap(cat, "sequential"), tokenizer)
    index.save(tmp_path / "idx")
    other = make_tokenizer(vocab_size=280)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    TrieIndex.load(tmp_path / "idx", tokenizer=tokenizer)  # same tokenizer: fine
    with pytest.raises(IndexMismatchError, match="tokenizer"):
        TrieIndex.load(tmp_path / "idx", tokenizer=other)


CHAT = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}{{ '<s>system\\nDEFAULT</s>\\n' }}{% endif %}"
        "{{ '<s>' + m['role'] + '\\n' + m['content'] + '</s>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'GEN' }}{% endif %}")


def test_chat_template_with_another_answer_context_refused(tmp_path):
    """The tokenizer fingerprint leaves out the chat template; an index records the answer context its items were
    tokenized after, and a tokenizer whose template ends prompts otherwise is refused (same vocabulary)."""
    cat = _catalog()
    tok = make_tokenizer()
    tok.chat_template = CHAT.replace("GEN", "<s>assistant\\n")
    index = build_index(cat, build_idmap(cat, "sequential"), tok)
    assert index.manifest["answer_context"].endswith("<s>assistant\n")
    index.save(tmp_path / "idx")
    tok.chat_template = CHAT.replace("GEN", "<s>assistant\\n").replace("DEFAULT", "")  # only the system text: same context
    TrieIndex.load(tmp_path / "idx", tokenizer=tok)
    tok.chat_template = CHAT.replace("GEN", "<s>bot: ")
    assert tokenizer_fingerprint(tok) == index.manifest["tokenizer_fingerprint"]
    with pytest.raises(IndexMismatchError, match="answer context"):
        TrieIndex.load(tmp_path / "idx", tokenizer=tok)


def test_mismatched_catalog_refused_extension_accepted(tmp_path, tokenizer):
    cat = _catalog()
    index = build_index(cat, build_idmap(cat, "sequential"), tokenizer)
    index.save(tmp_path / "idx")
    TrieIndex.load(tmp_path / "idx", catalog_hash=cat.content_hash())
    changed = Catalog([Item("0", "Another title")] + list(cat)[1:])
    with pytest.raises(IndexMismatchError, match="catalog"):
        TrieIndex.load(tmp_path / "idx", catalog_hash=changed.content_hash())
    bigger = Catalog(list(cat) + [Item("new", "New movie")])  # records the indexed catalog as its ancestor
    TrieIndex.load(tmp_path / "idx", catalog_hash=bigger.content_hash(), catalog_ancestors=[cat.content_hash()])


def test_span_mode_needs_single_token_markers():
    tok = make_tokenizer()
    assert len(item_token_ids(tok, ["ABC"], mode="span")[0]) >= 1
    from decoding_fixtures import CORPUS
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["</s>"]))
    plain = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>")
    with pytest.raises(ItemTokenizationError, match="one added token"):
        item_token_ids(plain, ["ABC"], mode="span")


def test_delta_add_and_retire_then_merge_on_save(tmp_path):
    rng = np.random.default_rng(1)
    seqs = [list(map(int, rng.integers(3, 200, size=3))) for _ in range(300)]
    seqs = [list(s) for s in dict.fromkeys(map(tuple, seqs))]
    ids = [f"i{i}" for i in range(len(seqs))]
    index = index_from_sequences(ids, seqs, vocab_size=200, end_token_id=2)
    base_arrays = index.base.trie.child_token
    new = [[7, 7, 7, 7], [8, 9]]
    seconds = index.add_items(["n1", "n2"], new)
    assert index.base.trie.child_token is base_arrays  # the base was not rebuilt
    assert seconds < 1.0 and index.delta is not None and len(index) == len(ids) + 2
    index.retire_items(["i0", "n2"])
    assert "i0" not in index and "n2" not in index and len(index) == len(ids)
    with pytest.raises(ValueError, match="already"):
        index.add_items(["n1"], [[9, 9]])
    index.save(tmp_path / "m")
    loaded = TrieIndex.load(tmp_path / "m")
    assert loaded.delta is None and set(loaded.item_ids) == (set(ids) - {"i0"}) | {"n1"}
    assert walk(loaded.base.trie, [7, 7, 7, 7]) > 0 and walk(loaded.base.trie, seqs[0]) == -1


def test_real_redial_titles_index_round_trip():
    """All 6,924 bundled ReDial movies, indexed by title with a tokenizer trained on them: every title's tokens, as
    the model emits them after the prompt, lead to its own item; title lookup finds titles with a typo."""
    from dlsearch.data.prompts import ANSWER_PREFIX, make_completion
    from dlsearch.data.redial import load_redial_movies
    from dlsearch.data.titles import titles_of

    cat = load_redial_movies()
    idmap = build_idmap(cat, "title")
    tok = make_tokenizer(corpus=[it.title for it in cat][:3000], vocab_size=2000)
    index = build_index(cat, idmap, tok)
    assert len(index) == len(cat) and index.base.trie.n_items == len(cat)
    codes = [idmap.code(i) for i in cat.ids]
    full = tok([ANSWER_PREFIX + make_completion(c) for c in codes], add_special_tokens=False)["input_ids"]
    ctx = len(tok(ANSWER_PREFIX, add_special_tokens=False)["input_ids"])
    tokens, lengths = pad_sequences([f[ctx:] for f in full])
    from dlsearch.decoding.index import _walk_exact

    rows = _walk_exact(index.base.trie, tokens, lengths)
    assert [index.base.item_ids[r] for r in rows] == cat.ids  # vectorized walk over every item
    assert titles_of(cat).lookup("Headhuntr (2009)")[0][0] == "75796"
