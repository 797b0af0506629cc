"""Offline `evaluate` modules, one directory each, wrapping evaluation/metrics.py.

    from dlsearch.evaluation.metric_modules import load_metric
    recall = load_metric("recall_at_k")        # == evaluate.load("<this dir>/recall_at_k"): a local path, no hub
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODULE_DIR = Path(__file__).resolve().parent
METRIC_MODULES = ("recall_at_k", "hit_at_k", "ndcg_at_k", "mrr", "valid_item_rate", "duplicate_rate", "exact_match")


def metric_module_path(name: str) -> Path:
    """The local directory of a metric module; ValueError for an unknown name."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric module {name!r}; available: {list(METRIC_MODULES)}")
    return MODULE_DIR / name


def load_metric(name: str, **kwargs: Any) -> Any:
    """evaluate.load on the local module directory (offline; keep_in_memory so no arrow cache files are left)."""
    import evaluate  # imported here: it is slow to import and only this function needs it

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(metric_module_path(name)), **kwargs)
