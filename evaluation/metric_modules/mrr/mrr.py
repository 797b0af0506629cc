"""Mean reciprocal rank of the first relevant item (whole ranking, or the top k if k is given).

Offline `evaluate` module wrapping evaluation/metrics.py (same definitions, tie rule and empty cases):

    import evaluate
    m = evaluate.load("evaluation/metric_modules/mrr")   # a local path: never a hub name
    m.compute(predictions=[["12", "7"]], references=[["7"]])
"""

from __future__ import annotations

from dlsearch.evaluation.metric_modules import common  # the module, not the class: evaluate takes the first Metric class it sees


class Mrr(common.RankingMetric):
    metric_name = "mrr"
    default_k = None
