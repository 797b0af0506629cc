"""direct-llm-search: the public Python API, re-exported from the packages that implement it."""

from data.catalog import Catalog, CatalogError, Item, load_catalog_jsonl, normalize_title
from data.formats import Conversation, Message, Prediction, ScoredItem, load_conversations, load_predictions
from data.ids import IdMap, IdMapError, build_idmap
from evaluation.metrics import duplicate_rate, exact_match, hit_at_k, mean_metric, ndcg_at_k, per_query_scores, rank_by_score, recall_at_k, reciprocal_rank, valid_item_rate
from evaluation.stats import bootstrap_ci, paired_test
from evaluation.protocol import evaluate_systems, movielens_loo_task, redial_turns_task
from evaluation.runner import EvaluateConfig, run_evaluation
from evaluation.sweep import SweepConfig, run_sweep

__all__ = [
    "Catalog", "CatalogError", "Item", "load_catalog_jsonl", "normalize_title",
    "Conversation", "Message", "Prediction", "ScoredItem", "load_conversations", "load_predictions",
    "IdMap", "IdMapError", "build_idmap",
    "duplicate_rate", "exact_match", "hit_at_k", "mean_metric", "ndcg_at_k", "per_query_scores", "rank_by_score",
    "recall_at_k", "reciprocal_rank", "valid_item_rate",
    "bootstrap_ci", "paired_test", "evaluate_systems", "movielens_loo_task", "redial_turns_task",
    "EvaluateConfig", "run_evaluation", "SweepConfig", "run_sweep",
]
