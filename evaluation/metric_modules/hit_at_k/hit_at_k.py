"""Hit@k: 1 if any relevant item is in a query's top k, averaged over queries.

Offline `evaluate` module wrapping evaluation/metrics.py (same definitions, tie rule and empty cases):

    import evaluate
    m = evaluate.load("evaluation/metric_modules/hit_at_k")   # a local path: never a hub name
    m.compute(predictions=[["12", "7"]], references=[["7"]], k=10)
"""

from __future__ import annotations

from dlsearch.evaluation.metric_modules import common  # the module, not the class: evaluate takes the first Metric class it sees


class HitAtK(common.RankingMetric):
    metric_name = "hit"
    default_k = 10
