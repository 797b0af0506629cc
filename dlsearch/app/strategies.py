"""Strategy names -> systems in the shared search shape, for `dlsearch evaluate --strategies` and the sweep.

Each builder takes the task (catalog, training counts) and a dict of options from the config, and returns a
strategy (retrieval.strategy: `search(conversations, k)` -> scores, rows and a per-conversation error). The baselines live in
evaluation/baselines.py; model- and index-based strategies come from the decoding and retrieval areas and are
adapted here, at the edge, so the protocol never depends on their internals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsearch.evaluation.baselines import BM25Search, PopularitySearch
from dlsearch.evaluation.protocol import EvalTask, System
from dlsearch.retrieval.strategy import SearcherStrategy

if TYPE_CHECKING:
    from dlsearch.app.recommend import SharedStrategies

# (task, options, shared): `shared` (one per evaluation run, or None) builds searchers that other systems of the
# run may use too, so each is built and run once (the router's direct search is the run's 'direct' system)
Builder = Callable[[EvalTask, dict[str, Any], "SharedStrategies | None"], System]
_BUILDERS: dict[str, Builder] = {}


def text_strategy(name: str, searcher: Any, catalog: Any) -> SearcherStrategy:
    """A text-query searcher (dual encoder, BM25 index, search API) as a strategy: the rendered conversation
    (retrieval.embedding.conversation_text, mentions as titles) is the query."""
    from dlsearch.retrieval.embedding import conversation_text

    return SearcherStrategy(name, searcher, lambda conv: conversation_text(conv, catalog))


def register_strategy(name: str, builder: Builder) -> None:
    """Make `name` usable in `dlsearch evaluate --strategies` and sweep configs."""
    _BUILDERS[name] = builder


def available_strategies() -> list[str]:
    return sorted(_BUILDERS)


def build_strategy(name: str, task: EvalTask, options: dict[str, Any] | None = None, *,
                   shared: "SharedStrategies | None" = None) -> System:
    """The system for a strategy name; ValueError naming the missing option when it cannot be built. Systems built
    with one `shared` reuse each other's searchers and rankings (the router and 'direct' run direct search once)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown strategy {name!r}; available: {available_strategies()} "
                         f"(or run it elsewhere and pass its output with --predictions FILE)")
    return _BUILDERS[name](task, dict(options or {}), shared)


def _need(opts: dict[str, Any], key: str, strategy: str, what: str) -> Any:
    if not opts.get(key):
        raise ValueError(f"strategy {strategy!r} needs strategy_options.{key}: {what} (e.g. --set strategy_options={{{key}: PATH}})")
    return opts[key]


DIRECT_DTYPES = ("float32", "bfloat16")


def direct_from_config(*, catalog: Any, model_dir: str | None, index: str, beams: int = 20, batch_size: int = 8,
                       adapter: str | None = None, length_penalty: float = 0.0, dtype: str = "float32") -> Any:
    """Direct search for the router and the evaluation runner: the model (finetune.loading.load_model) and its trie
    index (checked against this catalog's hash and the tokenizer) in a DirectConversationSearch.

    Args:
        length_penalty: beam scores are sum(log p) / length**length_penalty; 0 = summed log-probabilities (short
            titles win ties), 1 = mean log-probability per token.
        dtype: float32, or bfloat16 (about 3x faster on CPUs with AMX-BF16; beam scores are still float32).
    The prompt keeps the last data.max_messages messages when the model's recipe trained on that window."""
    import torch

    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import TrieIndex
    from dlsearch.finetune.loading import load_model
    from dlsearch.retrieval.direct import DirectConversationSearch

    if not model_dir:
        raise ValueError("direct search needs 'model_dir' (the fine-tuned model) in the recommend config")
    if not Path(index).exists():
        raise FileNotFoundError(f"{index}: no trie index; build it with `dlsearch index build --kind trie`")
    if dtype not in DIRECT_DTYPES:
        raise ValueError(f"direct search dtype must be one of {DIRECT_DTYPES}, got {dtype!r}")
    model, tokenizer, _ = load_model(model_dir, adapter=adapter, catalog=catalog, dtype=getattr(torch, dtype))
    trie = TrieIndex.load(index, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    search = DirectSearch(model, tokenizer, trie, catalog, beams=beams, batch_size=batch_size, length_penalty=length_penalty,
                          model_dir=adapter or model_dir)  # its manifest records the training window
    return DirectConversationSearch(search, catalog)


def _direct(task: EvalTask, opts: dict[str, Any], shared: "SharedStrategies | None" = None) -> System:
    args = dict(catalog=task.catalog, model_dir=_need(opts, "model_dir", "direct", "the fine-tuned model dir"),
                index=_need(opts, "trie", "direct", "a trie index dir from `dlsearch index build --kind trie`"),
                beams=int(opts.get("beams", 20)), length_penalty=float(opts.get("length_penalty", 0.0)),
                dtype=str(opts.get("dtype", "float32")))
    return shared.build(direct_from_config, **args) if shared is not None else direct_from_config(**args)


def _dual(task: EvalTask, opts: dict[str, Any], shared: "SharedStrategies | None" = None) -> System:
    from dlsearch.retrieval.build import load_dual_search

    index = _need(opts, "dual_index", "dual", "a dir from `dlsearch index build --kind dual`")
    return text_strategy("dual", load_dual_search(index, task.catalog, cache_dir=opts.get("cache_dir")), task.catalog)


def _router(task: EvalTask, opts: dict[str, Any], shared: "SharedStrategies | None" = None) -> System:
    from dlsearch.app.recommend import build_router, read_config

    cfg = read_config(_need(opts, "recommend_config", "router", "a recommend config such as configs/recommend.yaml"))
    return build_router(cfg, task.catalog, shared=shared)  # the router is a strategy itself (it removes exclusions)


register_strategy("popularity", lambda task, opts, shared=None: PopularitySearch(task.catalog, {i: c for i, c in task.train_counts.items() if i in task.catalog}))
register_strategy("bm25", lambda task, opts, shared=None: BM25Search(task.catalog, max_messages=opts.get("bm25_max_messages")))
register_strategy("direct", _direct)
register_strategy("dual", _dual)
register_strategy("router", _router)
