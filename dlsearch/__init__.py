"""direct-llm-search: the public Python API, re-exported from the packages that implement it.

    from dlsearch import load_catalog_jsonl, build_idmap, Router

Names resolve lazily (PEP 562) so that `dlsearch --help` and light imports do not pay for torch, faiss and
transformers; `dir(dlsearch)` and `__all__` list every public name.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(('Catalog', 'CatalogError', 'Item', 'load_catalog_jsonl', 'normalize_title'), "data.catalog"),
    **dict.fromkeys(('Conversation', 'Message', 'Prediction', 'ScoredItem', 'load_conversations', 'load_predictions'), "data.formats"),
    **dict.fromkeys(('IdMap', 'IdMapError', 'build_idmap'), "data.ids"),
    **dict.fromkeys(('ConfigError', 'RecipeConfig', 'load_recipe'), "finetune.config"),
    **dict.fromkeys(('export_merged', 'run_recipe'), "finetune.train"),
    **dict.fromkeys(('load_finetuned',), "finetune.loading"),
    **dict.fromkeys(('init_pretrained_model', 'init_scratch_model', 'train_tokenizer'), "finetune.model_factory"),
    **dict.fromkeys(('measure_memorization', 'write_memorization'), "finetune.memorization"),
    **dict.fromkeys(('AnnIndex', 'build_ann'), "retrieval.ann"),
    **dict.fromkeys(('BM25Index', 'build_bm25'), "retrieval.bm25"),
    **dict.fromkeys(('ConceptSearch', 'build_concept_index', 'snap_to_vocabulary'), "retrieval.concept"),
    **dict.fromkeys(('DualEncoder', 'DualEncoderConfig', 'DualSearch', 'train_dual_encoder'), "retrieval.dual_encoder"),
    **dict.fromkeys(('rrf',), "retrieval.fusion"),
    **dict.fromkeys(('load_router',), "retrieval.recommend_config"),
    **dict.fromkeys(('Policy', 'Router', 'load_memorization'), "retrieval.router"),
    **dict.fromkeys(('HTTPSearchAPI', 'SearchAPI', 'SearchAPIError'), "retrieval.search_api"),
    **dict.fromkeys(('duplicate_rate', 'exact_match', 'hit_at_k', 'mean_metric', 'ndcg_at_k', 'per_query_scores', 'rank_by_score', 'recall_at_k', 'reciprocal_rank', 'valid_item_rate'), "evaluation.metrics"),
    **dict.fromkeys(('bootstrap_ci', 'paired_test'), "evaluation.stats"),
    **dict.fromkeys(('evaluate_systems', 'movielens_loo_task', 'redial_turns_task'), "evaluation.protocol"),
    **dict.fromkeys(('EvaluateConfig', 'run_evaluation'), "evaluation.runner"),
    **dict.fromkeys(('SweepConfig', 'run_sweep'), "evaluation.sweep"),
    **dict.fromkeys(('QuickstartConfig', 'run_quickstart'), "evaluation.quickstart"),
    **dict.fromkeys(('load_metric',), "evaluation.metric_modules"),
    **dict.fromkeys(('build_collaborative',), "data.collaborative_ids"),
    **dict.fromkeys(('encode_texts', 'item_text', 'load_encoder'), "data.encoder"),
    **dict.fromkeys(('conversation_examples', 'history_examples', 'indexing_examples', 'search_query'), "data.examples"),
    **dict.fromkeys(('link_by_title',), "data.linking"),
    **dict.fromkeys(('load_catalog',), "data.loaders"),
    **dict.fromkeys(('load_movielens',), "data.movielens"),
    **dict.fromkeys(('load_examples', 'prepare'), "data.prepare"),
    **dict.fromkeys(('load_redial',), "data.redial"),
    **dict.fromkeys(('build_semantic', 'semantic_stats'), "data.semantic_ids"),
    **dict.fromkeys(('LeakageError', 'check_conversation_splits', 'check_history_splits', 'split_conversations', 'split_histories'), "data.splits"),
    **dict.fromkeys(('recommender_turns',), "data.turns"),
    **dict.fromkeys(('annotations',), "__future__"),
    **dict.fromkeys(('Any',), "typing"),
    **dict.fromkeys(('TokenTrie', 'TrieError', 'build_trie'), "decoding.trie"),
    **dict.fromkeys(('TrieIndex', 'IndexMismatchError', 'build_index', 'index_from_sequences'), "decoding.index"),
    **dict.fromkeys(('TrieConstraint',), "decoding.constraint"),
    **dict.fromkeys(('DirectSearch',), "decoding.direct"),
    **dict.fromkeys(('generate_predictions', 'recommend_for_conversation', 'load_model'), "decoding.generate"),
    **dict.fromkeys(('generate_with_items', 'parse_spans', 'SpanReply', 'SpanItem'), "decoding.spans"),
    **dict.fromkeys(('FuzzyMatcher',), "decoding.fuzzy"),
    **dict.fromkeys(('tokenizer_fingerprint',), "decoding.fingerprint"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'dlsearch' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
