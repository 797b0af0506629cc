"""The index update layer: one id <-> code mapping through add / retire / re-add / save / load.

Every reproduced defect of issue 14 is a test here; the property test compares an updated index with an index rebuilt
from scratch from the live (id, code) set: the constraint allows the same tokens after every prefix, and ids and codes
look each other up the same way."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlsearch.decoding.constraint import TrieConstraint
from dlsearch.decoding.index import TrieIndex, index_from_sequences
from dlsearch.decoding.trie import TrieError

V, EOS, PROMPT = 12, 0, 1  # tokens 1..11 form codes; 0 ends an item


def make(ids, seqs):
    return index_from_sequences(list(ids), [list(s) for s in seqs], vocab_size=V, end_token_id=EOS)


def allowed(index: TrieIndex, prefixes) -> list[set[int]]:
    """Tokens the production constraint allows after each prefix (one fresh processor per prefix length)."""
    out: list[set[int]] = [set() for _ in prefixes]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prefixes):
        by_len[len(p)].append(i)
    for length, idx in by_len.items():
        proc = TrieConstraint(index, eos_token_id=EOS)
        toks = torch.tensor([list(prefixes[i]) for i in idx], dtype=torch.long).reshape(len(idx), length)
        ids = torch.full((len(idx), 1), PROMPT, dtype=torch.long)
        for j in range(length + 1):
            masked = proc(ids, torch.zeros(len(idx), V))
            if j < length:
                ids = torch.cat([ids, toks[:, j:j + 1]], dim=1)
        for k, i in enumerate(idx):
            out[i] = set(torch.isfinite(masked[k]).nonzero().flatten().tolist())
    return out


def walk_item(index: TrieIndex, seq) -> str | None:
    """Item id the base trie maps a code to (works on the single-segment index a load of a compacted save gives)."""
    trie = index.base.trie
    node = np.zeros(1, dtype=np.int64)
    for t in seq:
        node = trie.child(node, np.array([t]))
        if node[0] < 0:
            return None
    row = trie.item_of(node)[0]
    return None if row < 0 else index.base.item_ids[int(row)]


# --- the reproduced defects -------------------------------------------------------------------------------------------

def test_second_add_keeps_each_id_with_its_code(tmp_path):
    """Issue 14's minimal case: base a=[3,4]; add x1=[9,9], x2=[5,5]; add x3=[7]; retire a, x2, x3 -> only x1's code
    may be generated (the old delta joined ids in trie-row order with codes in insertion order and generated [5,5])."""
    index = make(["a"], [[3, 4]])
    index.add_items(["x1", "x2"], [[9, 9], [5, 5]])
    index.add_items(["x3"], [[7]])
    index.retire_items(["a", "x2", "x3"])
    assert allowed(index, [(), (9,), (9, 9), (5,)]) == [{9}, {9}, {EOS}, {EOS}]
    index.save(tmp_path / "i")
    loaded = TrieIndex.load(tmp_path / "i")
    assert walk_item(loaded, [9, 9]) == "x1" and walk_item(loaded, [5, 5]) is None and len(loaded) == 1


def test_second_add_mapping_survives_save_without_retire(tmp_path):
    index = make(["a"], [[3, 4]])
    index.add_items(["x1", "x2"], [[9, 9], [5, 5]])
    index.add_items(["x3"], [[7]])
    index.save(tmp_path / "i")
    loaded = TrieIndex.load(tmp_path / "i")
    assert [walk_item(loaded, s) for s in ([3, 4], [9, 9], [5, 5], [7])] == ["a", "x1", "x2", "x3"]


def test_refused_add_changes_nothing(tmp_path):
    index = make(["a", "b"], [[3, 4], [5]])
    with pytest.raises(TrieError, match="same tokens"):
        index.add_items(["y", "z"], [[6], [3, 4]])  # z's code is a's
    assert len(index) == 2 and "y" not in index and "z" not in index
    with pytest.raises(TrieError):
        index.add_items(["w"], [[V + 3]])  # outside the vocabulary
    assert len(index) == 2 and "w" not in index
    index.add_items(["y"], [[6]])  # later adds and saves still work
    index.save(tmp_path / "i")
    assert len(TrieIndex.load(tmp_path / "i")) == 3


def test_retire_then_readd_with_new_code(tmp_path):
    index = make(["a", "b"], [[3, 4], [5]])
    index.retire_items(["a"])
    index.add_items(["a"], [[6, 6]])
    assert allowed(index, [(), (3,)]) == [{5, 6}, {EOS}]  # the old code [3, 4] stays retired
    index.save(tmp_path / "i")
    loaded = TrieIndex.load(tmp_path / "i")
    assert sorted(loaded.item_ids) == ["a", "b"]  # listed once
    assert walk_item(loaded, [3, 4]) is None and walk_item(loaded, [6, 6]) == "a"


def test_retired_code_reused_by_new_item_answers_with_new_id(tmp_path):
    index = make(["a", "b"], [[3, 4], [5]])
    index.retire_items(["a"])
    index.add_items(["x"], [[3, 4]])
    assert index.ids_of_codes([[3, 4], [5]]) == ["x", "b"]
    assert "a" not in index and index.code("x") == [3, 4]
    index.save(tmp_path / "i", compact=False)
    loaded = TrieIndex.load(tmp_path / "i")
    assert loaded.ids_of_codes([[3, 4]]) == ["x"] and "a" not in loaded


def test_retire_unknown_refused_and_repeat_retire_ignored():
    index = make(["a", "b"], [[3, 4], [5]])
    with pytest.raises(ValueError, match="not in the index"):
        index.retire_items(["a", "nope"])
    assert len(index) == 2  # nothing retired
    index.retire_items(["a"])
    index.retire_items(["a"])
    assert len(index) == 1


def test_add_refuses_repeated_and_live_ids():
    index = make(["a"], [[3, 4]])
    with pytest.raises(ValueError, match="twice"):
        index.add_items(["n", "n"], [[5], [6]])
    with pytest.raises(ValueError, match="already"):
        index.add_items(["a"], [[7]])
    with pytest.raises(TrieError, match="end token"):
        index.add_items(["e"], [[5, EOS]])
    assert len(index) == 1


# --- property: updates == rebuild from scratch ------------------------------------------------------------------------

codes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 11), codes), min_size=1, max_size=4)),
    st.tuples(st.just("retire"), st.lists(st.integers(0, 11), min_size=1, max_size=3)),
    st.tuples(st.just("save"), st.sampled_from([True, False, None])),
), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.lists(st.tuples(st.integers(0, 11), codes), min_size=1, max_size=6), steps=ops)
def test_updates_equal_rebuild_from_scratch(tmp_path, base, steps):
    live: dict[str, tuple] = {}
    for i, c in base:  # a valid base: distinct ids, distinct codes
        if f"i{i}" not in live and c not in live.values():
            live[f"i{i}"] = c
    index = make(live, live.values())
    seen_codes = set(live.values())
    for n_step, (op, arg) in enumerate(steps):
        if op == "add":
            ids = [f"i{i}" for i, _ in arg]
            cs = [c for _, c in arg]
            ok = len(set(ids)) == len(ids) and len(set(cs)) == len(cs) and not set(ids) & set(live) \
                and not set(cs) & set(live.values())
            before = len(index)
            if ok:
                index.add_items(ids, [list(c) for c in cs])
                live.update(zip(ids, cs))
            else:
                with pytest.raises(ValueError):
                    index.add_items(ids, [list(c) for c in cs])
                assert len(index) == before
            seen_codes |= set(cs)
        elif op == "retire":
            ids = list(dict.fromkeys(f"i{i}" for i in arg if f"i{i}" in live))
            if len(ids) >= len(live):  # an index keeps at least one item
                continue
            index.retire_items(ids)
            for i in ids:
                live.pop(i)
        else:
            d = tmp_path / f"s{n_step}"
            index.save(d, compact=arg)
            index = TrieIndex.load(d)
        assert len(index) == len(live)
    ref = make(live, live.values())
    prefixes = sorted({c[:k] for c in seen_codes for k in range(len(c) + 1)})
    assert allowed(index, prefixes) == allowed(ref, prefixes)
    every_id = [f"i{i}" for i in range(12)]
    assert [i in index for i in every_id] == [i in live for i in every_id]
    assert {i: tuple(index.code(i)) for i in live} == live
    probe = sorted(seen_codes)
    assert index.ids_of_codes([list(c) for c in probe]) == ref.ids_of_codes([list(c) for c in probe])
    assert sorted(index.item_ids) == sorted(live)
    merged = index.merged()  # compaction gives exactly the arrays and row order of a build from scratch
    assert merged.base.item_ids.tolist() == ref.base.item_ids.tolist() and merged.delta is None
    for name, a in ref.base.trie.arrays().items():
        assert np.array_equal(merged.base.trie.arrays()[name], a), name
