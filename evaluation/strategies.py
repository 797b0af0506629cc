"""Strategy names -> systems in the shared search shape, for `dlsearch evaluate --strategies` and the sweep.

Each builder takes the task (catalog, training counts) and a dict of options from the config, and returns an
object with `search(queries: list[Conversation], k) -> (scores, rows)`. The baselines live in
evaluation/baselines.py; model- and index-based strategies come from the decoding and retrieval areas and are
adapted here, at the edge, so the protocol never depends on their internals.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from evaluation.baselines import BM25Search, PopularitySearch
from evaluation.protocol import EvalTask, System

Builder = Callable[[EvalTask, dict[str, Any]], System]
_BUILDERS: dict[str, Builder] = {}
# strategies that another area provides: name -> (module that must be importable, what to pass)
_PROVIDED_ELSEWHERE = {
    "direct": ("decoding.direct", "strategy_options.model_dir (a fine-tuned model dir)"),
    "concept": ("retrieval.concept", "strategy_options.model_dir or a concept index"),
    "dual": ("retrieval.dual_encoder", "strategy_options.index_dir (a dual-encoder index)"),
    "router": ("retrieval.router", "strategy_options.model_dir and index_dir"),
}


def register_strategy(name: str, builder: Builder) -> None:
    """Make `name` usable in `dlsearch evaluate --strategies` and sweep configs."""
    _BUILDERS[name] = builder


def available_strategies() -> list[str]:
    return sorted(_BUILDERS)


def build_strategy(name: str, task: EvalTask, options: dict[str, Any] | None = None) -> System:
    """The system for a strategy name; ValueError naming what is missing when it cannot be built here."""
    options = dict(options or {})
    if name in _BUILDERS:
        return _BUILDERS[name](task, options)
    if name in _PROVIDED_ELSEWHERE:
        module, needs = _PROVIDED_ELSEWHERE[name]
        present = importlib.util.find_spec(module.split(".")[0]) is not None and _module_exists(module)
        hint = "" if present else f" ({module} is not in this checkout yet)"
        raise ValueError(
            f"strategy {name!r} cannot be built here{hint}; it needs {needs}. "
            f"Alternatively run it elsewhere and pass its output with --predictions FILE."
        )
    raise ValueError(f"unknown strategy {name!r}; available: {available_strategies() + sorted(_PROVIDED_ELSEWHERE)}")


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


register_strategy("popularity", lambda task, opts: PopularitySearch(task.catalog, {i: c for i, c in task.train_counts.items() if i in task.catalog}))
register_strategy("bm25", lambda task, opts: BM25Search(task.catalog, max_messages=opts.get("bm25_max_messages")))
