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
    **dict.fromkeys(('Catalog', 'CatalogError', 'Item', 'load_catalog_jsonl', 'normalize_title'), "dlsearch.data.catalog"),
    **dict.fromkeys(('Titles', 'build_titles', 'titles_of'), "dlsearch.data.titles"),
    **dict.fromkeys(('Conversation', 'Message', 'Prediction', 'ScoredItem', 'load_conversations', 'load_predictions'), "dlsearch.data.formats"),
    **dict.fromkeys(('IdMap', 'IdMapError', 'build_idmap'), "dlsearch.data.ids"),
    **dict.fromkeys(('ConfigError', 'RecipeConfig', 'load_recipe'), "dlsearch.finetune.config"),
    **dict.fromkeys(('export_merged', 'run_recipe'), "dlsearch.finetune.train"),
    **dict.fromkeys(('init_pretrained_model', 'load_finetuned', 'load_model', 'load_tokenizer'), "dlsearch.finetune.loading"),
    **dict.fromkeys(('import_model',), "dlsearch.finetune.importing"),
    **dict.fromkeys(('init_scratch_model', 'train_tokenizer'), "dlsearch.finetune.model_factory"),
    **dict.fromkeys(('measure_memorization', 'write_memorization'), "dlsearch.finetune.memorization"),
    **dict.fromkeys(('AnnIndex', 'build_ann'), "dlsearch.retrieval.ann"),
    **dict.fromkeys(('BM25Index', 'build_bm25'), "dlsearch.retrieval.bm25"),
    **dict.fromkeys(('ConceptSearch', 'build_concept_index', 'snap_to_vocabulary'), "dlsearch.retrieval.concept"),
    **dict.fromkeys(('DualEncoder', 'DualEncoderConfig', 'DualSearch', 'train_dual_encoder'), "dlsearch.retrieval.dual_encoder"),
    **dict.fromkeys(('rrf',), "dlsearch.retrieval.fusion"),
    **dict.fromkeys(('load_router',), "dlsearch.app.recommend"),
    **dict.fromkeys(('Policy', 'Router', 'load_memorization'), "dlsearch.retrieval.router"),
    **dict.fromkeys(('HTTPSearchAPI', 'SearchAPI', 'SearchAPIError'), "dlsearch.retrieval.search_api"),
    **dict.fromkeys(('duplicate_rate', 'exact_match', 'hit_at_k', 'mean_metric', 'ndcg_at_k', 'per_query_scores', 'rank_by_score', 'recall_at_k', 'reciprocal_rank', 'valid_item_rate'), "dlsearch.evaluation.metrics"),
    **dict.fromkeys(('bootstrap_ci', 'paired_test'), "dlsearch.evaluation.stats"),
    **dict.fromkeys(('evaluate_systems', 'movielens_loo_task', 'redial_turns_task'), "dlsearch.evaluation.protocol"),
    **dict.fromkeys(('EvaluateConfig', 'run_evaluation'), "dlsearch.app.runner"),
    **dict.fromkeys(('SweepConfig', 'run_sweep'), "dlsearch.app.sweep"),
    **dict.fromkeys(('QuickstartConfig', 'run_quickstart'), "dlsearch.app.quickstart"),
    **dict.fromkeys(('load_metric',), "dlsearch.evaluation.metric_modules"),
    **dict.fromkeys(('build_collaborative',), "dlsearch.data.collaborative_ids"),
    **dict.fromkeys(('encode_texts', 'item_text', 'load_encoder'), "dlsearch.data.encoder"),
    **dict.fromkeys(('conversation_examples', 'history_examples', 'indexing_examples', 'search_query'), "dlsearch.data.examples"),
    **dict.fromkeys(('link_by_title',), "dlsearch.data.linking"),
    **dict.fromkeys(('load_catalog',), "dlsearch.data.loaders"),
    **dict.fromkeys(('load_movielens',), "dlsearch.data.movielens"),
    **dict.fromkeys(('load_examples', 'prepare'), "dlsearch.data.prepare"),
    **dict.fromkeys(('load_redial',), "dlsearch.data.redial"),
    **dict.fromkeys(('build_semantic', 'semantic_stats'), "dlsearch.data.semantic_ids"),
    **dict.fromkeys(('LeakageError', 'check_conversation_splits', 'check_history_splits', 'split_conversations', 'split_histories'), "dlsearch.data.splits"),
    **dict.fromkeys(('recommender_turns',), "dlsearch.data.turns"),
    **dict.fromkeys(('annotations',), "__future__"),
    **dict.fromkeys(('Any',), "typing"),
    **dict.fromkeys(('TokenTrie', 'TrieError', 'build_trie'), "dlsearch.decoding.trie"),
    **dict.fromkeys(('TrieIndex', 'IndexMismatchError', 'build_index', 'index_from_sequences'), "dlsearch.decoding.index"),
    **dict.fromkeys(('TrieConstraint',), "dlsearch.decoding.constraint"),
    **dict.fromkeys(('DirectSearch',), "dlsearch.decoding.direct"),
    **dict.fromkeys(('generate_predictions', 'recommend_for_conversation', 'index_catalog'), "dlsearch.decoding.generate"),
    **dict.fromkeys(('generate_with_items', 'parse_spans', 'SpanReply', 'SpanItem'), "dlsearch.decoding.spans"),
    **dict.fromkeys(('Mention', 'MentionLinker', 'link_conversation', 'linker_for'), "dlsearch.retrieval.mentions"),
    **dict.fromkeys(('tokenizer_fingerprint',), "dlsearch.data.fingerprint"),
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
