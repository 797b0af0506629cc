"""retrieval.strategy: one interface for every strategy; failures stay with the conversation that caused them."""

from __future__ import annotations

import json

import numpy as np

from dlsearch.data.formats import Conversation, Message
from dlsearch.retrieval.bm25 import build_bm25
from dlsearch.retrieval.strategy import SearcherStrategy, Strategy, StrategyResult, as_strategy, run_strategy


def _convs(*texts):
    return [Conversation(f"c{i}", [Message("user", t)]) for i, t in enumerate(texts)]


def _text(conv):
    return conv.messages[-1].content


def test_bm25_as_a_strategy_unpacks_as_the_search_shape(ml_catalog):
    strat = SearcherStrategy("bm25", build_bm25(ml_catalog), _text)
    assert isinstance(strat, Strategy) and strat.masks_exclusions is False
    res = strat.search(_convs("Jumanji", "Heat"), 3)
    scores, rows = res
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (2, 3)
    assert res.errors == [None, None] and res.failed == []
    assert ml_catalog.items[rows[0, 0]].title.startswith("Jumanji")


def test_bad_answers_become_errors_of_their_conversation_only(ml_catalog):
    bm25 = build_bm25(ml_catalog)

    def nan_on_heat(queries, k):  # a function is a searcher too
        s, r = bm25.search(queries, k)
        s[[i for i, q in enumerate(queries) if q == "Heat"]] = np.nan
        return s, r

    res = SearcherStrategy("svc", nan_on_heat, _text).search(_convs("Jumanji", "Heat", "Toy Story"), 4)
    assert res.failed == [1] and "non-finite" in res.errors[1]
    assert (res.rows[1] == -1).all() and np.isneginf(res.scores[1]).all()
    assert (res.rows[[0, 2], 0] >= 0).all()


def test_query_builder_failure_and_none(ml_catalog):
    def to_query(conv):
        if conv.id == "c0":
            raise KeyError("no concepts for c0")
        return None if conv.id == "c1" else _text(conv)

    res = SearcherStrategy("concept", build_bm25(ml_catalog), to_query).search(_convs("a", "b", "Heat"), 2)
    assert res.errors[0] == "KeyError: 'no concepts for c0'"
    assert res.errors[1] is None and (res.rows[1] == -1).all()  # None: nothing to ask, not a failure
    assert res.errors[2] is None and res.rows[2, 0] >= 0


def test_wrong_shape_is_an_error_not_a_crash(ml_catalog):
    res = SearcherStrategy("bad", lambda q, k: (np.zeros((len(q), k + 1)), np.zeros((len(q), k + 1))), _text).search(_convs("x"), 2)
    assert "expected (1, 2)" in res.errors[0]


def test_as_strategy_and_run_strategy(ml_catalog):
    bm25 = build_bm25(ml_catalog)
    wrapped = as_strategy("bm25", bm25, to_query=_text)
    assert isinstance(wrapped, SearcherStrategy) and as_strategy("again", wrapped) is wrapped
    plain = run_strategy(bm25, ["Jumanji"], 2)  # a plain (scores, rows) searcher: no per-conversation errors
    assert isinstance(plain, StrategyResult) and plain.errors == [None]


class _Counting:
    """A conversation searcher (BM25 over the last message) that records what it was asked."""

    masks_exclusions = True

    def __init__(self, catalog, fail_on: str = ""):
        self.bm25, self.asked, self.fail_on = build_bm25(catalog), [], fail_on

    def search(self, convs, k):
        self.asked.append([c.id for c in convs])
        if any(_text(c) == self.fail_on for c in convs):
            raise RuntimeError("down")
        return self.bm25.search([_text(c) for c in convs], k)


def test_ranking_memo_searches_each_query_once_and_returns_the_same_arrays(ml_catalog):
    from dlsearch.retrieval.strategy import RankingMemo

    inner = _Counting(ml_catalog)
    memo = RankingMemo(inner)
    convs = _convs("Jumanji", "Heat", "Toy Story")
    first = memo.search(convs, 4)
    assert memo.masks_exclusions and inner.asked == [["c0", "c1", "c2"]]
    # a batch with one new conversation: only that one is searched; the others' rows are the ones computed before
    again = memo.search([convs[2], Conversation("c9", [Message("user", "Balto")]), convs[0]], 4)
    assert inner.asked[-1] == ["c9"] and memo.computed == 4 and memo.reused == 2
    assert np.array_equal(again[1][[0, 2]], first[1][[2, 0]]) and np.array_equal(again[0][[0, 2]], first[0][[2, 0]])
    memo.search(convs[:1], 5)  # another k is another query
    assert inner.asked[-1] == ["c0"]
    changed = Conversation("c0", [Message("user", "Jumanji")], exclude=["1"])  # same id, other query: searched again
    memo.search([changed], 4)
    assert inner.asked[-1] == ["c0"] and memo.computed == 6


def test_ranking_memo_remembers_no_failed_batch(ml_catalog):
    import pytest

    from dlsearch.retrieval.strategy import RankingMemo

    inner = _Counting(ml_catalog, fail_on="Heat")
    memo = RankingMemo(inner)
    with pytest.raises(RuntimeError):
        memo.search(_convs("Jumanji", "Heat"), 3)
    assert memo.computed == 0
    memo.search(_convs("Jumanji"), 3)
    assert inner.asked[-1] == ["c0"]  # searched: the failed batch left nothing behind
    # under the router's adapter a failing batch is retried one conversation at a time: only Heat fails
    res = SearcherStrategy("direct", RankingMemo(_Counting(ml_catalog, fail_on="Heat"))).search(_convs("Jumanji", "Heat"), 3)
    assert res.failed == [1] and res.errors[0] is None


def test_direct_search_memo_key_holds_prompt_masks_and_allow_list(ml_catalog):
    """Conversations that differ in what beam search reads (excluded or allowed items) never share a ranking."""
    from types import SimpleNamespace

    from dlsearch.retrieval.direct import DirectConversationSearch
    from dlsearch.retrieval.strategy import RankingMemo

    from dlsearch.decoding.direct import conversation_prompt

    direct = DirectConversationSearch(SimpleNamespace(prompt=lambda conv: conversation_prompt(conv, ml_catalog)), ml_catalog)
    ids = ml_catalog.ids
    conv = Conversation("c", [Message("user", f"I liked @{ids[0]}")])
    key = direct.query_key
    assert key(conv) == key(Conversation("other id", conv.messages, exclude=[ids[0]]))  # @-mention already masks it
    assert key(conv) != key(Conversation("c", conv.messages, exclude=[ids[1]]))
    assert key(conv) != key(Conversation("c", conv.messages, meta={"allow": [ids[2]]}))
    memo = RankingMemo(direct)
    assert memo.masks_exclusions and memo.masks_allow


def test_ranking_memo_store_keeps_each_chunk_as_it_goes_and_resumes(ml_catalog, tmp_path):
    """A long evaluation killed half-way lost every ranking (they lived in memory): with a store each chunk is on
    disk once ranked, and a resumed memo of the same searcher searches only the rest, returning the stored arrays
    bit for bit (float32 / int64 kept). A line cut off by the kill is searched again; another identity reuses
    nothing; a bad line elsewhere names the file and line."""
    import pytest

    from dlsearch.retrieval.strategy import RankingMemo

    store = tmp_path / "rankings" / "direct.jsonl"
    texts = ["Jumanji", "Heat", "Toy Story", "Balto", "Sabrina", "Casino", "Heat"]
    ref = RankingMemo(_Counting(ml_catalog)).search(_convs(*texts), 4)  # no store: one batch, the reference

    inner = _Counting(ml_catalog, fail_on="Casino")
    memo = RankingMemo(inner, store=store, identity="model A", chunk=2)
    with pytest.raises(RuntimeError):
        memo.search(_convs(*texts), 4)
    assert inner.asked == [["c0", "c1"], ["c2", "c3"], ["c4", "c5"]]  # chunk by chunk; the third one failed
    assert len(store.read_text().splitlines()) == 4  # the two finished chunks are on disk
    store.write_text(store.read_text() + '{"key": "abc", "scores": [0.1')  # and a line the kill cut off

    inner = _Counting(ml_catalog)
    resumed = RankingMemo(inner, store=store, identity="model A", resume=True, chunk=2)
    scores, rows = resumed.search(_convs(*texts), 4)
    assert inner.asked == [["c4", "c5"], ["c6"]] and resumed.stored == 4 and resumed.computed == 3
    assert scores.dtype == ref[0].dtype == np.float32 and rows.dtype == ref[1].dtype
    assert np.array_equal(scores, ref[0]) and np.array_equal(rows, ref[1])

    other = _Counting(ml_catalog)
    RankingMemo(other, store=store, identity="model B", resume=True).search(_convs(*texts), 4)
    assert other.asked == [[f"c{i}" for i in range(7)]]  # another model's rankings are never reused
    lines = store.read_text().splitlines()  # the cut-off line was dropped before new lines were appended
    assert len(lines) == 4 + 3 + 7 and all(json.loads(line) for line in lines)
    store.write_text("\n".join(["not json", *lines]) + "\n")
    with pytest.raises(ValueError, match=r"direct\.jsonl, line 1: not a stored ranking"):
        RankingMemo(_Counting(ml_catalog), store=store, identity="model B", resume=True)
    RankingMemo(_Counting(ml_catalog), store=store, identity="model B")  # without resume: emptied, written anew
    assert store.read_text() == ""
