"""direct-llm-search: the public Python API, re-exported from the packages that implement it."""

from data.catalog import Catalog, CatalogError, Item, load_catalog_jsonl, normalize_title
from data.collaborative_ids import build_collaborative
from data.encoder import encode_texts, item_text, load_encoder
from data.examples import conversation_examples, history_examples, indexing_examples, search_query
from data.formats import Conversation, Message, Prediction, ScoredItem, load_conversations, load_predictions
from data.ids import IdMap, IdMapError, build_idmap
from data.linking import link_by_title
from data.loaders import load_catalog
from data.movielens import load_movielens
from data.prepare import load_examples, prepare
from data.redial import load_redial
from data.semantic_ids import build_semantic, semantic_stats
from data.splits import LeakageError, check_conversation_splits, check_history_splits, split_conversations, split_histories
from data.turns import recommender_turns

__all__ = [
    "Catalog", "CatalogError", "Item", "load_catalog_jsonl", "normalize_title",
    "build_collaborative",
    "encode_texts", "item_text", "load_encoder",
    "conversation_examples", "history_examples", "indexing_examples", "search_query",
    "Conversation", "Message", "Prediction", "ScoredItem", "load_conversations", "load_predictions",
    "IdMap", "IdMapError", "build_idmap",
    "link_by_title",
    "load_catalog",
    "load_movielens",
    "load_examples", "prepare",
    "load_redial",
    "build_semantic", "semantic_stats",
    "LeakageError", "check_conversation_splits", "check_history_splits", "split_conversations", "split_histories",
    "recommender_turns",
]
