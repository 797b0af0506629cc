"""direct-llm-search: the public Python API, re-exported from the packages that implement it."""

from data.catalog import Catalog, CatalogError, Item, load_catalog_jsonl, normalize_title
from data.formats import Conversation, Message, Prediction, ScoredItem, load_conversations, load_predictions
from data.ids import IdMap, IdMapError, build_idmap
from retrieval.ann import AnnIndex, build_ann
from retrieval.bm25 import BM25Index, build_bm25
from retrieval.concept import ConceptSearch, build_concept_index, snap_to_vocabulary
from retrieval.dual_encoder import DualEncoder, DualEncoderConfig, DualSearch, train_dual_encoder
from retrieval.fusion import rrf
from retrieval.recommend_config import load_router
from retrieval.router import Policy, Router, load_memorization
from retrieval.search_api import HTTPSearchAPI, SearchAPI, SearchAPIError
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
    "AnnIndex", "build_ann", "BM25Index", "build_bm25", "ConceptSearch", "build_concept_index", "snap_to_vocabulary",
    "DualEncoder", "DualEncoderConfig", "DualSearch", "train_dual_encoder", "rrf", "load_router", "Policy", "Router",
    "load_memorization", "HTTPSearchAPI", "SearchAPI", "SearchAPIError",
    "bootstrap_ci", "paired_test", "evaluate_systems", "movielens_loo_task", "redial_turns_task",
    "EvaluateConfig", "run_evaluation", "SweepConfig", "run_sweep",
]
