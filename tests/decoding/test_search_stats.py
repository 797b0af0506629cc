"""The generate summary names what it counts (issue 13: `returned` counted beams x conversations)."""

from dlsearch.decoding.direct import SearchStats


def test_summary_counts_beam_hypotheses_by_that_name() -> None:
    stats = SearchStats(returned=3 * 20, valid=50, duplicates=5, placeholders=10, per_query_valid=[20, 20, 10])
    d = stats.as_dict()
    assert "returned" not in d and d["beam_hypotheses"] == 60
    assert d["valid_item_rate"] == 50 / 50 and d["duplicate_rate"] == 5 / 50
