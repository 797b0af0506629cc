"""configs/recommend.yaml -> a ready Router (`load_router`) and the batch entry point of `dlsearch recommend`.

    router, k = load_router("configs/recommend.yaml", overrides={"k": 20})
    preds = recommend_file("configs/recommend.yaml", "conversations.jsonl", "preds.jsonl")

Every section rejects unknown keys by name; paths are relative to the working directory.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import yaml

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.formats import Conversation, load_conversations, save_predictions
from dlsearch.retrieval.router import Policy, Router, load_memorization
from dlsearch.retrieval.strategy import SearcherStrategy

log = logging.getLogger(__name__)

TOP_KEYS = {"catalog", "k", "cache_dir", "model_dir", "policy", "strategies"}
STRATEGY_KEYS: dict[str, set[str]] = {
    "direct": {"enabled", "factory", "options"},
    "dual": {"enabled", "index"},
    "concept": {"enabled", "index", "aggregate", "concepts_from", "snap"},
    "bm25": {"enabled", "index", "query_from"},
    "search_api": {"enabled", "endpoint", "preset", "mapping", "timeout", "retries", "max_response_bytes", "query_from"},
}
QUERY_FROM = ("conversation", "meta", "model")


def _check(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return d


def read_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from dlsearch.data.config import resolve_config_path

    p = resolve_config_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such config file")
    return check_config({**(yaml.safe_load(p.read_text()) or {}), **(overrides or {})}, str(p))


def check_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a recommend config mapping (also the body of configs/serve.yaml); errors name `where` and the key."""
    p = where
    cfg = dict(_check(cfg, TOP_KEYS, str(p)))
    if not cfg.get("catalog"):
        raise ValueError(f"{p}: field 'catalog' (path to catalog.jsonl) is required")
    strategies = _check(cfg.get("strategies"), set(STRATEGY_KEYS), f"{p}: strategies")
    for name, sc in strategies.items():
        _check(sc, STRATEGY_KEYS[name], f"{p}: strategies.{name}")
        qf = (sc or {}).get("query_from", (sc or {}).get("concepts_from"))
        if qf is not None and qf not in QUERY_FROM:
            raise ValueError(f"{p}: strategies.{name}: query source {qf!r} not in {QUERY_FROM}")
    return cfg


def _import(dotted: str) -> Callable[..., Any]:
    mod, _, attr = dotted.partition(":")
    if not attr:
        raise ValueError(f"strategies.direct.factory must be 'module:callable', got {dotted!r}")
    return getattr(importlib.import_module(mod), attr)


def build_router(cfg: dict[str, Any], catalog: Catalog | None = None) -> Router:
    """Construct every enabled strategy; a strategy that cannot be built (missing index, bad endpoint) is an error,
    not a silent fallback: the config says it should exist."""
    from dlsearch.retrieval.build import load_bm25, load_concept_search, load_dual_search
    from dlsearch.retrieval.concept import snap_to_vocabulary
    from dlsearch.retrieval.search_api import HTTPSearchAPI

    catalog = catalog or load_catalog_jsonl(cfg["catalog"])
    cache_dir = cfg.get("cache_dir")
    model_dir = cfg.get("model_dir")
    generator = None

    def gen() -> Any:
        nonlocal generator
        if generator is None:
            if not model_dir:
                raise ValueError("a strategy takes its query from the model but 'model_dir' is not set")
            from dlsearch.retrieval.generate import TaskGenerator, load_model

            generator = TaskGenerator(*load_model(model_dir, catalog), catalog)
        return generator

    strategies: dict[str, Any] = {}
    for name, sc in (cfg.get("strategies") or {}).items():
        sc = sc or {}
        if not sc.get("enabled", True):
            continue
        if name == "direct":
            if not sc.get("factory"):
                raise ValueError("strategies.direct.factory ('module:callable' returning a search-shape object) is required")
            searcher = _import(sc["factory"])(catalog=catalog, model_dir=model_dir, **(sc.get("options") or {}))
            strategies[name] = searcher  # reads conversations (the router passes them to "direct" as they are)
        elif name == "dual":
            strategies[name] = load_dual_search(sc["index"], catalog, cache_dir=cache_dir)  # the router feeds it conversation text
        elif name == "concept":
            search = load_concept_search(sc["index"], catalog, aggregate=sc.get("aggregate", "mean"), cache_dir=cache_dir)
            source, snap = sc.get("concepts_from", "meta"), sc.get("snap", False)
            vocab = sorted(search.vocabulary)

            def to_concepts(conv: Conversation, source=source, snap=snap, vocab=vocab) -> list[str] | None:
                concepts = conv.meta.get("concepts") if source == "meta" else gen().concepts(conv)
                if not concepts:
                    return None
                return snap_to_vocabulary(concepts, vocab, cache_dir=cache_dir) if snap else list(concepts)

            strategies[name] = SearcherStrategy(name, search, to_concepts)
        else:
            if name == "bm25":
                searcher = load_bm25(sc.get("index"), catalog)
            else:
                mapping = None
                if sc.get("mapping"):
                    from dlsearch.retrieval.search_api import HTTPMapping

                    m = _check(sc["mapping"], set(HTTPMapping.__dataclass_fields__), "strategies.search_api.mapping")
                    mapping = HTTPMapping(**m)
                searcher = HTTPSearchAPI(catalog, sc["endpoint"], preset=sc.get("preset", "dlsearch"), mapping=mapping,
                                         timeout=sc.get("timeout", 2.0), retries=sc.get("retries", 2),
                                         max_response_bytes=int(sc.get("max_response_bytes", 8 << 20)))
            source = sc.get("query_from", "conversation")
            if source == "meta":
                strategies[name] = SearcherStrategy(name, searcher, lambda conv: conv.meta.get("query"))
            elif source == "model":
                strategies[name] = SearcherStrategy(name, searcher, lambda conv: gen().query(conv))
            else:
                strategies[name] = searcher  # the router feeds it the rendered conversation text
    memorization = load_memorization(model_dir, catalog.content_hash()) if model_dir else None
    policy = Policy.from_dict(_check(cfg.get("policy"), set(Policy.__dataclass_fields__), "policy"))
    return Router(catalog, strategies, policy, memorization=memorization)


def load_router(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Router, int]:
    cfg = read_config(path, overrides)
    return build_router(cfg), int(cfg.get("k", 10))


def recommend_file(config: str | Path, input_path: str | Path, out_path: str | Path, *, overrides: dict[str, Any] | None = None,
                   batch_size: int = 64, resume: bool = False) -> dict[str, Any]:
    """Predictions for every conversation of `input_path`, appended to `out_path` batch by batch (a killed run keeps
    its finished batches; `resume` skips the conversations already written). Every conversation gets its line, with
    `degraded` naming the strategies that failed for it; each batch's plan, ids and failures are appended to
    `OUT.decisions.jsonl`."""
    from tqdm import tqdm

    from dlsearch.data.formats import PredictionLog

    router, k = load_router(config, overrides)
    convs = load_conversations(input_path)
    decisions_path = Path(str(out_path) + ".decisions.jsonl")
    degraded: dict[str, int] = {}
    first: dict[str, Any] | None = None
    with PredictionLog(out_path, resume=resume) as out, open(decisions_path, "a" if resume else "w", encoding="utf-8") as dec:
        todo = [c for c in convs if c.id not in out.done]
        skipped = len(convs) - len(todo)
        for s in tqdm(range(0, len(todo), batch_size), desc="recommend", disable=len(todo) <= batch_size):
            preds = router.recommend_many(todo[s : s + batch_size], k)
            out.write(preds)
            for d in router.decisions:
                dec.write(json.dumps(d) + "\n")
                first = first or d
            dec.flush()
            router.decisions.clear()  # written: a long run must not grow in memory
            for p in preds:
                for name in p.degraded:
                    degraded[name] = degraded.get(name, 0) + 1
    return {"input": str(input_path), "out": str(out_path), "conversations": len(convs), "written": len(todo),
            "skipped_already_written": skipped, "k": k, "plan": first, "degraded_conversations": degraded,
            "decisions": str(decisions_path)}
