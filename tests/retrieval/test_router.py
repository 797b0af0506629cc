"""Router: fallback when the search API is down, RRF fusion, and use of the saved memorization figure."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dlsearch.data.formats import Conversation, Message
from dlsearch.retrieval.bm25 import build_bm25
from dlsearch.retrieval.router import Policy, Router, load_memorization
from dlsearch.retrieval.search_api import HTTPSearchAPI
from dlsearch.app.search_server import ServerThread, create_app, free_port
from dlsearch.retrieval.shape import topk_from_lists


class FixedDirect:
    """Stand-in for decoding.direct (any object with the search shape): answers a fixed list of ids."""

    name = "direct"

    def __init__(self, catalog, ids, fail=False):
        self.rows = [catalog.index(i) for i in ids]
        self.fail = fail

    def search(self, queries, k):
        if self.fail:
            raise RuntimeError("model server crashed")
        return topk_from_lists([[(r, 1.0 - 0.1 * j) for j, r in enumerate(self.rows)] for _ in queries], k)


def _conv(text, exclude=()):
    return Conversation("c1", [Message("user", text)], exclude=list(exclude))


def _write_mem(tmp_path, catalog_hash, em):
    (tmp_path / "memorization.json").write_text(json.dumps({catalog_hash: {
        "scheme": "atomic", "task": "title->id", "n_items": 400, "exact_match": em, "valid_rate": 1.0, "step": 10,
        "measured_at": "2026-11-30T09:00:00Z"}}))
    return load_memorization(tmp_path, catalog_hash)


def test_search_api_down_degrades_to_other_strategies(ml_catalog, caplog):
    dead = HTTPSearchAPI(ml_catalog, f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.0)
    router = Router(ml_catalog, {"search_api": dead, "bm25": build_bm25(ml_catalog)})
    with caplog.at_level(logging.WARNING, logger="dlsearch.retrieval.router"):
        pred = router.recommend(_conv("I want a jungle board game adventure like jumanji"), k=5)
    assert pred.items and all(s.strategy == "bm25" for s in pred.items)
    # "jumanji" is linked as a mention (retrieval/mentions.py): the film the user named is not recommended back
    assert not any(ml_catalog[s.item_id].title.startswith("Jumanji") for s in pred.items)
    assert "SearchUnavailable" in pred.degraded["search_api"] and list(pred.degraded) == ["search_api"]
    assert router.decisions[-1]["failures"] == {"search_api": 1}
    assert "strategy search_api failed for conversation c1" in caplog.text


def test_search_api_up_is_used_and_fused(ml_catalog):
    bm25 = build_bm25(ml_catalog)
    with ServerThread(create_app(bm25, ml_catalog)) as url:
        router = Router(ml_catalog, {"search_api": HTTPSearchAPI(ml_catalog, url), "direct": FixedDirect(ml_catalog, ml_catalog.ids[100:103])},
                        Policy(unmeasured="fallback"))
        pred = router.recommend(_conv("Toy Story"), k=6)
    strategies = {s.strategy for s in pred.items}
    assert "direct" in strategies and "search_api" in strategies
    assert router.decisions[-1]["used"] == ["direct", "search_api"]
    scores = [s.score for s in pred.items]
    assert scores == sorted(scores, reverse=True) and [s.rank for s in pred.items] == list(range(1, 7))


def test_fusion_rewards_agreement_and_applies_exclusions(ml_catalog):
    ids = ml_catalog.ids
    a = FixedDirect(ml_catalog, [ids[1], ids[2], ids[3]])
    b = FixedDirect(ml_catalog, [ids[3], ids[4], ids[1]])
    router = Router(ml_catalog, {"a": a, "b": b}, Policy(overfetch=0))
    pred = router.recommend(_conv("anything", exclude=[ids[2]]), k=10)
    got = [s.item_id for s in pred.items]
    # exclusion first: a = [1, 3], b = [3, 4, 1]; item 3 ranks (2, 1), item 1 ranks (1, 3)
    assert got == [ids[3], ids[1], ids[4]]
    assert [s.strategy for s in pred.items] == ["b+a", "a+b", "b"]
    assert pred.items[0].score == pytest.approx(1 / 61 + 1 / 62)


@pytest.mark.parametrize("em,expect_used", [(0.2, ["bm25"]), (0.7, ["direct", "bm25"]), (0.97, ["direct"])])
def test_router_uses_saved_memorization(ml_catalog, tmp_path, em, expect_used):
    mem = _write_mem(tmp_path, ml_catalog.content_hash(), em)
    direct = FixedDirect(ml_catalog, ml_catalog.ids[:3])
    router = Router(ml_catalog, {"direct": direct, "bm25": build_bm25(ml_catalog)}, Policy(min_exact_match=0.5, direct_alone_at=0.95), memorization=mem)
    pred = router.recommend(_conv("Heat"), k=5)
    assert router.decisions[-1]["used"] == expect_used
    assert any(f"{em:.3f}" in r for r in router.decisions[-1]["reasons"])
    if expect_used == ["direct"]:
        assert all(s.strategy == "direct" for s in pred.items)


def test_memorization_for_other_catalog_version_counts_as_unmeasured(ml_catalog, tmp_path):
    assert _write_mem(tmp_path, "0" * 64, 0.99)["exact_match"] == 0.99  # measured for another catalog version
    mem = load_memorization(tmp_path, ml_catalog.content_hash())
    assert mem is None
    router = Router(ml_catalog, {"direct": FixedDirect(ml_catalog, ml_catalog.ids[:3]), "bm25": build_bm25(ml_catalog)},
                    Policy(unmeasured="skip"), memorization=mem)
    router.recommend(_conv("Heat"), 5)
    assert router.decisions[-1]["used"] == ["bm25"]
    small = Router(ml_catalog, {"direct": FixedDirect(ml_catalog, ml_catalog.ids[:3]), "bm25": build_bm25(ml_catalog)},
                   Policy(direct_max_items=100), memorization={"exact_match": 1.0})
    small.recommend(_conv("Heat"), 5)
    assert small.decisions[-1]["used"] == ["bm25"] and "direct_max_items" in small.decisions[-1]["reasons"][0]


def test_direct_alone_failing_runs_fallbacks(ml_catalog):
    router = Router(ml_catalog, {"direct": FixedDirect(ml_catalog, [], fail=True), "bm25": build_bm25(ml_catalog)},
                    memorization={"exact_match": 0.99})
    pred = router.recommend(_conv("a jungle adventure game"), 3)
    assert pred.items[0].strategy == "bm25"
    assert "model server crashed" in pred.degraded["direct"] and router.decisions[-1]["failures"] == {"direct": 1}


def test_everything_down_answers_each_conversation_with_its_reasons(ml_catalog):
    # was: RuntimeError("every strategy failed") for the whole batch, so `recommend` lost every answer
    dead = HTTPSearchAPI(ml_catalog, f"http://127.0.0.1:{free_port()}", retries=0)
    router = Router(ml_catalog, {"search_api": dead})
    preds = router.recommend_many([_conv("x"), Conversation("c2", [Message("user", "y")])], 3)
    assert [p.id for p in preds] == ["c1", "c2"]
    assert all(p.items == [] and "SearchUnavailable" in p.degraded["search_api"] for p in preds)
    res = router.search([_conv("x")], 3)
    assert (res.rows == -1).all() and res.errors[0].startswith("every strategy failed: search_api: SearchUnavailable")


class FlakyOnOneQuery:
    """A searcher that fails whenever its batch holds the query "poison" (a service choking on one request)."""

    def __init__(self, bm25):
        self.bm25, self.calls = bm25, 0

    def search(self, queries, k):
        self.calls += 1
        if any("poison" in q for q in queries):
            raise RuntimeError("HTTP 500 on 'poison'")
        return self.bm25.search(queries, k)


def test_one_failed_query_degrades_only_its_own_conversation(ml_catalog):
    flaky = FlakyOnOneQuery(build_bm25(ml_catalog))
    router = Router(ml_catalog, {"flaky": flaky, "direct": FixedDirect(ml_catalog, ml_catalog.ids[:2])},
                    Policy(unmeasured="fallback"))
    convs = [Conversation(f"c{i}", [Message("user", t)]) for i, t in enumerate(["jungle adventure", "poison pill", "Heat"])]
    preds = router.recommend_many(convs, 5)
    assert [bool(p.degraded) for p in preds] == [False, True, False]
    assert preds[1].degraded == {"flaky": "RuntimeError: HTTP 500 on 'poison'"}
    assert {s.strategy for s in preds[1].items} == {"direct"}  # the other strategy still answers it
    assert any("flaky" in s.strategy for s in preds[0].items) and any("flaky" in s.strategy for s in preds[2].items)
    assert flaky.calls == 1 + 3  # the batch, then each conversation alone
    assert router.decisions[-1]["failures"] == {"flaky": 1}


def test_policy_fields_are_checked(ml_catalog):
    with pytest.raises(ValueError, match="unknown field 'policy.min_exactmatch'; did you mean 'min_exact_match'"):
        Policy.from_dict({"min_exactmatch": 0.3})
    with pytest.raises(ValueError, match="policy.direct_max_items: expected an integer"):
        Policy.from_dict({"direct_max_items": "many"})


def test_router_and_single_strategies_in_search_shape(ml_catalog):
    from dlsearch.retrieval.shape import check_result
    from dlsearch.retrieval.strategy import SearcherStrategy

    bm25 = build_bm25(ml_catalog)
    convs = [_conv("Jumanji"), _conv("zzqxv")]
    router = Router(ml_catalog, {"bm25": bm25, "direct": FixedDirect(ml_catalog, ml_catalog.ids[:2])})
    scores, rows = router.search(convs, 4)
    check_result(scores, rows, 2, 4)
    single = SearcherStrategy("bm25", bm25, lambda c: c.messages[-1].content if c.messages[-1].content != "zzqxv" else None)
    s, r = single.search(convs, 3)
    assert ml_catalog.items[r[0, 0]].title.startswith("Jumanji") and (r[1] == -1).all()


def test_excluding_one_member_excludes_its_duplicate_group():
    """Regression: "The Matrix " (140395) came back #1 when "The Matrix (1999)" (85036) was excluded, and a fused
    list could hold both."""
    from dlsearch.data.redial import load_redial_movies

    cat = load_redial_movies()
    router = Router(cat, {"direct": FixedDirect(cat, ["140395", "85036", "111776"])}, Policy(unmeasured="trust"))
    pred = router.recommend(_conv("like @85036", exclude=["85036"]), k=3)
    assert [s.item_id for s in pred.items] == ["111776"]
    fused = Router(cat, {"direct": FixedDirect(cat, ["140395", "111776"]), "bm25": FixedDirect(cat, ["85036", "151656"])},
                   Policy(unmeasured="fallback"))
    ids = [s.item_id for s in fused.recommend(_conv("anything"), k=4).items]
    assert len(ids) == 3 and len({"140395", "85036"} & set(ids)) == 1


@pytest.mark.parametrize("link", [False, True])
def test_mentioned_ids_are_never_recommended_back(ml_catalog, link):
    """The router excludes Conversation.exclusions() (exclude + @id mentions), as direct search does, with or without
    linking plain-text titles (without linking it read `exclude` alone and gave a mentioned @2 back first)."""
    router = Router(ml_catalog, {"bm25": build_bm25(ml_catalog)}, Policy.from_dict({"link_mentions": link}))
    conv = Conversation("c", [Message("user", "I loved @2, something like Jumanji please")])
    got = [s.item_id for s in router.recommend_many([conv], 5)[0].items]
    assert len(got) == 5 and "2" not in got


def test_policy_range_errors_name_the_dotted_key_where_it_sits():
    """Policy's own checks say "field: why", so the validator prefixes the real path: in a sweep config the policy sits
    at step_options.router_policy (it read `step_options.router_policy: policy.weights must be >= 0`)."""
    with pytest.raises(ValueError, match=r"^step_options\.router_policy\.weights: must be >= 0, got \{'bm25': -1\.0\}$"):
        Policy.from_dict({"weights": {"bm25": -1.0}}, where="step_options.router_policy")
    with pytest.raises(ValueError, match=r"^policy\.rrf_k: must be > 0"):
        Policy.from_dict({"rrf_k": 0})
    with pytest.raises(ValueError, match=r"^policy\.direct_alone_at: must be in \[0, 1\]"):
        Policy.from_dict({"direct_alone_at": 2})
