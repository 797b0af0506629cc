"""Recall@k: fraction of a query's relevant items found in its top k, averaged over queries.

Offline `evaluate` module wrapping evaluation/metrics.py (same definitions, tie rule and empty cases):

    import evaluate
    m = evaluate.load("evaluation/metric_modules/recall_at_k")   # a local path: never a hub name
    m.compute(predictions=[["12", "7"]], references=[["7"]], k=10)
"""

from __future__ import annotations

from dlsearch.evaluation.metric_modules import common  # the module, not the class: evaluate takes the first Metric class it sees


class RecallAtK(common.RankingMetric):
    metric_name = "recall"
    default_k = 10
