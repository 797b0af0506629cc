"""`dlsearch evaluate --strategies direct router` runs direct search once per conversation (issue 11, item 11): the
router's direct strategy is the run's 'direct' system (one model, one RankingMemo), and its fused rankings are the
ones a router without reuse computes. Real ReDial dialogues, a tiny random model and its trie over their movies."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from dlsearch.app.recommend import SharedStrategies
from dlsearch.app.runner import EvaluateConfig, run_evaluation
from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Message, save_conversations
from dlsearch.data.redial import load_dialogues, load_redial_movies
from dlsearch.data.turns import recommender_turns
from dlsearch.decoding.direct import DirectSearch

from decoding_fixtures import write_tiny_direct  # noqa: E402

N_TRAIN, N_TEST = 6, 3  # first ReDial dialogues
DEPTH, BEAMS = 10, 4


def _prepared(d, catalog, train, test) -> None:
    """A prepared dir in `dlsearch data prepare`'s layout."""
    catalog.save_jsonl(d / "catalog.jsonl")
    save_conversations(d / "conversations" / "train.jsonl", train)
    save_conversations(d / "conversations" / "test.jsonl", test)
    (d / "manifest.json").write_text(json.dumps({"dataset": "redial", "dataset_name": "redial", "split": "seeded"}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("reuse")
    movies = load_redial_movies()
    dialogues = load_dialogues(movies)[: N_TRAIN + N_TEST]
    ids = {i for c in dialogues for i in c.mentioned()}
    catalog = Catalog([it for it in movies if it.id in ids])  # the movies these dialogues mention
    write_tiny_direct(d, catalog, beams=BEAMS)
    man = json.loads((d / "model" / "manifest.json").read_text())  # trained on the last 2 messages: short prompts
    (d / "model" / "manifest.json").write_text(json.dumps({**man, "recipe": {"data": {"max_messages": 2}}}))
    train = [t for c in dialogues[:N_TRAIN] for t in recommender_turns(c)]
    test = [t for c in dialogues[N_TRAIN:] for t in recommender_turns(c)]
    _prepared(d, catalog, train, test)
    # the same turns, one with a title typed as plain text (mention linking adds it to that turn's exclusions)
    first = test[0]
    typed = next(it for it in catalog if it.id not in first.exclusions())
    last = Message(first.messages[-1].role, first.messages[-1].content + f" I also liked {typed.title}.")
    _prepared(d / "linked", catalog, train, [replace(first, messages=[*first.messages[:-1], last]), *test[1:]])
    for name, link in (("recommend.yaml", False), ("recommend-linked.yaml", True)):
        (d / name).write_text(yaml.safe_dump({
            "catalog": str(d / "catalog.jsonl"), "k": 10, "cache_dir": str(d / "cache"), "model_dir": str(d / "model"),
            "policy": {"unmeasured": "fallback", "link_mentions": link},
            "strategies": {"direct": {"enabled": True, "factory": "direct", "options": {"index": str(d / "trie"), "beams": BEAMS}},
                           "bm25": {"enabled": True, "index": None}}}))
    return d


def _counts(report) -> dict:
    """shared_searches without where the rankings were stored."""
    return {name: {k: v for k, v in c.items() if k in ("computed", "reused")} for name, c in report["shared_searches"].items()}


def _evaluate(d, monkeypatch, *, data=None, recommend: str = "recommend.yaml", reuse: bool = True, resume: bool = False):
    """run_evaluation as `dlsearch evaluate` runs it; returns the report and the prompts direct search was given."""
    searched: list[str] = []
    real = DirectSearch.search_with_stats

    def counting(self, queries, k, **kw):
        searched.extend(queries)
        return real(self, queries, k, **kw)

    monkeypatch.setattr(DirectSearch, "search_with_stats", counting)
    if not reuse:  # what evaluate did before: every build its own searcher, nothing shared
        monkeypatch.setattr(SharedStrategies, "build", lambda self, factory, **kw: factory(**kw))
    data = data or d
    cfg = EvaluateConfig(task="turns", data=str(data), strategies=["direct", "router"], depth=DEPTH, modes=["excluded"],
                         n_resamples=20, out=str(data / f"eval-{recommend}-{reuse}"),
                         strategy_options={"model_dir": str(d / "model"), "trie": str(d / "trie"), "beams": BEAMS,
                                           "recommend_config": str(d / recommend)})
    report, _ = run_evaluation(cfg, print_table=False, resume=resume)
    monkeypatch.undo()
    return report, searched


def test_direct_search_runs_once_per_conversation_and_router_results_are_unchanged(setup, monkeypatch):
    report, searched = _evaluate(setup, monkeypatch)
    n = len((setup / "conversations" / "test.jsonl").read_text().splitlines())  # every test turn has a target here
    queries = report["modes"]["excluded"]["n_queries"] + report["modes"]["excluded"]["dropped_queries"]
    assert queries == n >= 4
    assert len(searched) == n  # once per conversation, though both 'direct' and the router use it
    # the router asked direct search for every conversation and got the rankings 'direct' computed
    assert _counts(report) == {"dlsearch.app.strategies:direct_from_config": {"computed": n, "reused": n}}

    before, searched_before = _evaluate(setup, monkeypatch, reuse=False)
    assert len(searched_before) == 2 * n  # without reuse: once for 'direct', once inside the router
    assert sorted(searched_before) == sorted(searched * 2)
    runs, runs_before = report["modes"]["excluded"]["_runs"], before["modes"]["excluded"]["_runs"]
    for name in ("direct", "router"):
        assert runs[name] == runs_before[name]  # same queries kept, same items, same scores (float equality)
        assert report["modes"]["excluded"]["systems"][name]["metrics"] == before["modes"]["excluded"]["systems"][name]["metrics"]


def test_linked_mentions_search_again_only_the_conversations_they_change(setup, monkeypatch):
    """With mention linking on, a turn whose typed titles add exclusions is a different query for direct search:
    it is searched again, the other turns' rankings are reused."""
    report, searched = _evaluate(setup, monkeypatch, data=setup / "linked", recommend="recommend-linked.yaml")
    n = len((setup / "linked" / "conversations" / "test.jsonl").read_text().splitlines())
    assert len(searched) == n + 1
    assert _counts(report)["dlsearch.app.strategies:direct_from_config"] == {"computed": n + 1, "reused": n - 1}


def test_shared_strategies_share_one_searcher_per_factory_call(tmp_path, monkeypatch):
    """Same factory and arguments (defaults filled in, paths resolved, catalog by content) -> one searcher; any other
    argument -> its own."""
    import numpy as np

    from dlsearch.data.catalog import Item

    built = []

    def factory(*, catalog, model_dir, index, beams=20):
        built.append(beams)
        return type("S", (), {"masks_exclusions": True, "search": lambda self, convs, k: (np.zeros((len(convs), k)), np.zeros((len(convs), k), int))})()

    monkeypatch.chdir(tmp_path)
    cat = lambda: Catalog([Item("1", "Heat (1995)")])  # noqa: E731
    shared = SharedStrategies()
    a = shared.build(factory, catalog=cat(), model_dir="m", index="t")
    assert shared.build(factory, catalog=cat(), model_dir=str(tmp_path / "m"), index="./t", beams=20) is a
    b = shared.build(factory, catalog=cat(), model_dir="m", index="t", beams=5)
    assert b is not a and built == [20, 5] and a.masks_exclusions
    assert set(shared.counts()) == {f"{__name__}:test_shared_strategies_share_one_searcher_per_factory_call.<locals>.factory",
                                    f"{__name__}:test_shared_strategies_share_one_searcher_per_factory_call.<locals>.factory#2"}


def _assert_same_rankings(a: tuple, b: tuple, atol: float = 1e-4) -> None:
    """Same queries kept, same items in the same order, scores within atol. A resumed run batches the remaining
    conversations differently (10 prompts where the first run had 12), and on an AVX-512 CPU a prompt's log-probs
    then differ in the 6th-7th digit (-19.067698 vs -19.067699 on CI's machine): float equality failed there."""
    (kept_a, ranked_a), (kept_b, ranked_b) = a, b
    assert kept_a == kept_b and len(ranked_a) == len(ranked_b)
    for (ids_a, scores_a), (ids_b, scores_b) in zip(ranked_a, ranked_b):
        assert ids_a == ids_b
        assert max((abs(x - y) for x, y in zip(scores_a, scores_b)), default=0.0) <= atol, (scores_a, scores_b)


def test_interrupted_evaluation_resumes_from_its_stored_rankings(setup, monkeypatch):
    """`dlsearch evaluate --resume` after a kill: direct search (the evaluation's own and the router's) ranks only the
    conversations the first run did not store, and the report's rankings equal an uninterrupted run's. A model
    rewritten in place is a new searcher: nothing of the old one is reused."""
    import os

    full, searched = _evaluate(setup, monkeypatch)
    (store,) = (setup / "eval-recommend.yaml-True" / "rankings").glob("direct_from_config-*.jsonl")
    lines = store.read_text().splitlines()
    n = len(searched)
    assert len(lines) == n == full["shared_searches"]["dlsearch.app.strategies:direct_from_config"]["computed"]
    store.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed while writing the third ranking

    resumed, searched_again = _evaluate(setup, monkeypatch, resume=True)
    assert len(searched_again) == n - 2 and sorted(searched_again) == sorted(searched[2:])
    counts = resumed["shared_searches"]["dlsearch.app.strategies:direct_from_config"]
    assert counts["from_store"] == 2 and counts["computed"] == n - 2 and counts["store"] == str(store)
    for name in ("direct", "router"):
        _assert_same_rankings(resumed["modes"]["excluded"]["_runs"][name], full["modes"]["excluded"]["_runs"][name])
    assert len(store.read_text().splitlines()) == n  # the cut line dropped, the rest appended

    weights = next(p for p in (setup / "model").iterdir() if p.suffix == ".safetensors")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained in place
    _, searched_new = _evaluate(setup, monkeypatch, resume=True)
    assert len(searched_new) == n
