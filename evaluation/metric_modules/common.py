"""What the `evaluate` modules in this folder share: their MetricInfo and the ranking metrics' compute.

A module file keeps only its docstring (the description), its inputs text and a class naming its metric; the
definitions themselves live in evaluation/metrics.py.
"""

from __future__ import annotations

import sys
from typing import Any

import datasets
import evaluate

from dlsearch.evaluation.metrics import mean_metric, rank_by_score

RANKINGS = datasets.Sequence(datasets.Value("string"))  # one list of item ids per query


def metric_info(metric: evaluate.Metric, inputs: str, features: dict[str, Any]) -> evaluate.MetricInfo:
    """MetricInfo with the first line of the metric's module docstring as its description."""
    doc = sys.modules[type(metric).__module__].__doc__ or type(metric).__name__
    return evaluate.MetricInfo(description=doc.strip().splitlines()[0], citation="", inputs_description=inputs,
                               features=datasets.Features(features))


def ranking_inputs(name: str, default_k: int | None) -> str:
    default = "None: the whole ranking" if default_k is None else str(default_k)
    return f"""
Args:
    predictions: one ranking per query, a list of item ids best first (or any order when `scores` is given).
    references: one list of relevant item ids per query (must be non-empty).
    k: cut-off (default {default}).
    scores: optional, one list of floats per query aligned with `predictions`; the ranking is then re-ordered by
        score descending, equal scores by item id ascending (as strings).
Returns:
    {{"{name}@<k>": mean over queries}} ("{name}" when k is None)
"""


class RankingMetric(evaluate.Metric):
    """A ranking metric of evaluation.metrics.per_query_scores; subclasses set `metric_name` and `default_k`."""

    metric_name: str = ""
    default_k: int | None = 10

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(self, ranking_inputs(self.metric_name, self.default_k), {"predictions": RANKINGS, "references": RANKINGS})

    def _compute(self, predictions, references, **kwargs: Any) -> dict[str, float]:
        unknown = sorted(set(kwargs) - {"k", "scores"})
        if unknown:
            raise TypeError(f"{self.metric_name}: unknown argument(s) {unknown}; accepted: k, scores")
        k, scores = kwargs.get("k", self.default_k), kwargs.get("scores")
        if scores is not None:
            if len(scores) != len(predictions):
                raise ValueError(f"{len(scores)} score lists for {len(predictions)} predictions")
            predictions = [rank_by_score(list(p), s) for p, s in zip(predictions, scores)]
        name = self.metric_name if k is None else f"{self.metric_name}@{k}"
        return {name: mean_metric(predictions, references, name)}
