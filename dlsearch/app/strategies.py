"""Strategy names -> systems in the shared search shape, for `dlsearch evaluate --strategies` and the sweep.

Each builder takes the task (catalog, training counts) and a dict of options from the config, and returns an
object with `search(queries: list[Conversation], k) -> (scores, rows)`. The baselines live in
evaluation/baselines.py; model- and index-based strategies come from the decoding and retrieval areas and are
adapted here, at the edge, so the protocol never depends on their internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dlsearch.data.formats import Conversation
from dlsearch.evaluation.baselines import BM25Search, PopularitySearch
from dlsearch.evaluation.protocol import EvalTask, System

Builder = Callable[[EvalTask, dict[str, Any]], System]
_BUILDERS: dict[str, Builder] = {}


class ConversationTextSearch:
    """A text-query searcher (dual encoder, BM25 index, search API) seen from conversations: the rendered
    conversation (retrieval.embedding.conversation_text, mentions as titles) is the query."""

    def __init__(self, searcher: Any, catalog: Any):
        self.searcher, self.catalog = searcher, catalog

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        from dlsearch.retrieval.embedding import conversation_text

        return self.searcher.search([conversation_text(c, self.catalog) for c in convs], k)


class RouterSystem:
    """The router (retrieval.router.Router) as an evaluation system; it always removes `conversation.exclude`."""

    removes_exclusions = True

    def __init__(self, router: Any):
        self.router = router

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.router.search(convs, k)


def register_strategy(name: str, builder: Builder) -> None:
    """Make `name` usable in `dlsearch evaluate --strategies` and sweep configs."""
    _BUILDERS[name] = builder


def available_strategies() -> list[str]:
    return sorted(_BUILDERS)


def build_strategy(name: str, task: EvalTask, options: dict[str, Any] | None = None) -> System:
    """The system for a strategy name; ValueError naming the missing option when it cannot be built."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown strategy {name!r}; available: {available_strategies()} "
                         f"(or run it elsewhere and pass its output with --predictions FILE)")
    return _BUILDERS[name](task, dict(options or {}))


def _need(opts: dict[str, Any], key: str, strategy: str, what: str) -> Any:
    if not opts.get(key):
        raise ValueError(f"strategy {strategy!r} needs strategy_options.{key}: {what} (e.g. --set strategy_options={{{key}: PATH}})")
    return opts[key]


def direct_from_config(*, catalog: Any, model_dir: str | None, index: str, beams: int = 20, batch_size: int = 8,
                       adapter: str | None = None) -> Any:
    """Direct search for the router and the evaluation runner: the model (finetune.loading.load_model) and its trie
    index (checked against this catalog's hash and the tokenizer) in a DirectConversationSearch."""
    from pathlib import Path

    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import TrieIndex
    from dlsearch.finetune.loading import load_model
    from dlsearch.retrieval.direct import DirectConversationSearch

    if not model_dir:
        raise ValueError("direct search needs 'model_dir' (the fine-tuned model) in the recommend config")
    if not Path(index).exists():
        raise FileNotFoundError(f"{index}: no trie index; build it with `dlsearch index build --kind trie`")
    model, tokenizer, _ = load_model(model_dir, adapter=adapter, catalog=catalog)
    trie = TrieIndex.load(index, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    return DirectConversationSearch(DirectSearch(model, tokenizer, trie, catalog, beams=beams, batch_size=batch_size), catalog)


def _direct(task: EvalTask, opts: dict[str, Any]) -> System:
    return direct_from_config(catalog=task.catalog, model_dir=_need(opts, "model_dir", "direct", "the fine-tuned model dir"),
                              index=_need(opts, "trie", "direct", "a trie index dir from `dlsearch index build --kind trie`"),
                              beams=int(opts.get("beams", 20)))


def _dual(task: EvalTask, opts: dict[str, Any]) -> System:
    from dlsearch.retrieval.build import load_dual_search

    index = _need(opts, "dual_index", "dual", "a dir from `dlsearch index build --kind dual`")
    return ConversationTextSearch(load_dual_search(index, task.catalog, cache_dir=opts.get("cache_dir")), task.catalog)


def _router(task: EvalTask, opts: dict[str, Any]) -> System:
    from dlsearch.app.recommend import build_router, read_config

    cfg = read_config(_need(opts, "recommend_config", "router", "a recommend config such as configs/recommend.yaml"))
    return RouterSystem(build_router(cfg, task.catalog))


register_strategy("popularity", lambda task, opts: PopularitySearch(task.catalog, {i: c for i, c in task.train_counts.items() if i in task.catalog}))
register_strategy("bm25", lambda task, opts: BM25Search(task.catalog, max_messages=opts.get("bm25_max_messages")))
register_strategy("direct", _direct)
register_strategy("dual", _dual)
register_strategy("router", _router)
