"""Duplicate rate: fraction of all ranking entries that repeat an item already earlier in the same ranking.

Offline `evaluate` module wrapping evaluation/metrics.py:

    import evaluate
    m = evaluate.load("evaluation/metric_modules/duplicate_rate")   # a local path: never a hub name
    m.compute(predictions=[["12", "12", "7"], ["3"]])   # -> {"duplicate_rate": 0.25}
"""

from __future__ import annotations

import datasets
import evaluate

from dlsearch.evaluation.metric_modules.common import metric_info
from dlsearch.evaluation.metrics import duplicate_rate

_KWARGS = """
Args:
    predictions: one ranking (list of item ids) per query.
Returns:
    {"duplicate_rate": float}; ValueError when there are no entries at all.
"""


class DuplicateRate(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(self, _KWARGS, {"predictions": datasets.Sequence(datasets.Value("string"))})

    def _compute(self, predictions) -> dict[str, float]:
        return {"duplicate_rate": duplicate_rate([list(p) for p in predictions])}
