"""Exact-match memorization: fraction of generations equal to the expected id text (outer whitespace stripped).

Offline `evaluate` module wrapping evaluation/metrics.py (the title->id memorization score):

    import evaluate
    m = evaluate.load("evaluation/metric_modules/exact_match")   # a local path: never a hub name
    m.compute(predictions=[" 12", "8"], references=["12", "7"])   # -> {"exact_match": 0.5}
"""

from __future__ import annotations

import datasets
import evaluate

from dlsearch.evaluation.metric_modules.common import metric_info
from dlsearch.evaluation.metrics import exact_match

_KWARGS = """
Args:
    predictions: one generated text per request (None when nothing was generated).
    references: the expected text (the item's id code) per request.
Returns:
    {"exact_match": float}; ValueError when there are no generations.
"""


class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(self, _KWARGS, {"predictions": datasets.Value("string"), "references": datasets.Value("string")})

    def _compute(self, predictions, references) -> dict[str, float]:
        return {"exact_match": exact_match(list(predictions), list(references))}
