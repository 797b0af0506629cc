"""Valid-item rate: fraction of generated item ids (None = unparseable output) that name an item in the catalog.

Offline `evaluate` module wrapping evaluation/metrics.py:

    import evaluate
    m = evaluate.load("evaluation/metric_modules/valid_item_rate")   # a local path: never a hub name
    m.compute(predictions=["12", "999", None], catalog_ids=["12", "7"])   # -> {"valid_item_rate": 0.333...}
"""

from __future__ import annotations

import datasets
import evaluate

from dlsearch.evaluation.metric_modules.common import metric_info
from dlsearch.evaluation.metrics import valid_item_rate

_KWARGS = """
Args:
    predictions: one generated item id per generation (None when the output parsed to no id).
    catalog_ids: the catalog's item ids.
Returns:
    {"valid_item_rate": float}; ValueError when there are no generations.
"""


class ValidItemRate(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return metric_info(self, _KWARGS, {"predictions": datasets.Value("string")})

    def _compute(self, predictions, catalog_ids=None) -> dict[str, float]:
        if catalog_ids is None:
            raise ValueError("valid_item_rate needs catalog_ids=[...] (the catalog's item ids)")
        return {"valid_item_rate": valid_item_rate(list(predictions), set(catalog_ids))}
