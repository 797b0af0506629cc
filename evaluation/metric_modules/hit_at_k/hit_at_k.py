"""Hit@k: 1 if any relevant item is in a query's top k, averaged over queries.

Offline `evaluate` module wrapping evaluation/metrics.py (same definitions, tie rule and empty cases):

    import evaluate
    m = evaluate.load("evaluation/metric_modules/hit_at_k")   # a local path: never a hub name
    m.compute(predictions=[["12", "7"]], references=[["7"]], k=10)
"""

from __future__ import annotations

import datasets
import evaluate

from evaluation.metrics import mean_metric, rank_by_score

_KWARGS = """
Args:
    predictions: one ranking per query, a list of item ids best first (or any order when `scores` is given).
    references: one list of relevant item ids per query (must be non-empty).
    k: cut-off (default 10).
    scores: optional, one list of floats per query aligned with `predictions`; the ranking is then re-ordered by
        score descending, equal scores by item id ascending (as strings).
Returns:
    {"hit@<k>": mean over queries}
"""


class HitAtK(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__.splitlines()[0],
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, k: int | None = 10, scores=None) -> dict[str, float]:
        if scores is not None:
            if len(scores) != len(predictions):
                raise ValueError(f"{len(scores)} score lists for {len(predictions)} predictions")
            predictions = [rank_by_score(list(p), s) for p, s in zip(predictions, scores)]
        name = "hit" if k is None else f"hit@{k}"
        return {name: mean_metric(predictions, references, name)}
