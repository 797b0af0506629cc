"""Quickstart pieces that run fast: the catalog subset it announces and the verdict it prints.
(The whole `dlsearch quickstart` takes ~10 minutes; its wall time is reported, not tested here.)"""

from __future__ import annotations

from dlsearch.app.quickstart import _verdict, build_source


def test_source_is_the_movies_mentioned_in_the_shipped_dialogues(tmp_path) -> None:
    catalog, dialogues, info = build_source(tmp_path)
    assert info["catalog_items"] == len(catalog) == 2007 and info["redial_items"] == 6924 and len(dialogues) == 1342
    assert (tmp_path / "catalog.jsonl").is_file() and (tmp_path / "conversations.jsonl").is_file()
    mentioned = {m for d in dialogues for m in d.mentioned()}
    assert set(catalog.ids) == mentioned


def _report(direct: float, pop: float, p: float) -> dict:
    iv = lambda m: {"mean": m, "low": m - 0.02, "high": m + 0.02}  # noqa: E731
    return {"modes": {"excluded": {"best_baseline": "popularity", "systems": {
        "popularity": {"metrics": {"recall@10": iv(pop)}},
        "direct": {"metrics": {"recall@10": iv(direct)}, "vs_best_baseline": {"recall@10": {"p_value": p}}}}}}}


def test_verdict_says_whether_direct_beats_popularity() -> None:
    assert _verdict(_report(0.2, 0.1, 0.001))["beats_popularity"] is True
    v = _verdict(_report(0.12, 0.1, 0.4))
    assert v["beats_popularity"] and not v["significant"] and "not significant" in v["text"]
    assert "does NOT beat" in _verdict(_report(0.05, 0.1, 0.01))["text"]
