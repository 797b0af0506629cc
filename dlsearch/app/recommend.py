"""configs/recommend.yaml -> a ready Router (`load_router`) and the batch entry point of `dlsearch recommend`.

    router, k = load_router("configs/recommend.yaml", overrides={"k": 20})
    preds = recommend_file("configs/recommend.yaml", "conversations.jsonl", "preds.jsonl")

Every section rejects unknown keys by name. The paths a config reads (catalog, model_dir, each index, direct search's
index and adapter) resolve relative to the config file, else the working directory (data.config.resolve_input_path);
cache_dir, where it writes, is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from dlsearch.data.formats import Conversation, load_conversations, save_predictions
from dlsearch.retrieval.router import Policy, Router, load_memorization
from dlsearch.retrieval.strategy import SearcherStrategy

log = logging.getLogger(__name__)

TOP_KEYS = {"catalog", "k", "cache_dir", "model_dir", "policy", "strategies"}
QUERY_FROM = ("conversation", "meta", "model")
STRATEGY_GROUP = "dlsearch.strategies"  # entry-point group of strategy factories (pyproject.toml)
# The package's own factories, for a source checkout whose installed metadata predates the entry point.
BUILTIN_STRATEGIES = {"direct": "dlsearch.app.strategies:direct_from_config"}
# targets older configs spelled out, by the name they are registered under now
MOVED_STRATEGIES = {"dlsearch.retrieval.direct:direct_from_config": "direct", "retrieval.direct:direct_from_config": "direct"}


def registered_strategies() -> dict[str, Any]:
    """Strategy factories by name: ours plus every `dlsearch.strategies` entry point of installed packages. A config
    names one of these; it never names a module to import (a config file must not be able to run code)."""
    from importlib.metadata import EntryPoint, entry_points

    found = {ep.name: ep for ep in entry_points(group=STRATEGY_GROUP)}
    # ours last: an install whose entry-point metadata predates a move (direct_from_config left retrieval for the
    # application layer) must not shadow the built-in
    found.update({n: EntryPoint(n, v, STRATEGY_GROUP) for n, v in BUILTIN_STRATEGIES.items()})
    return found


def _registered(name: str) -> Any:
    eps = registered_strategies()
    ep = (eps.get(name) or {e.value: e for e in eps.values()}.get(name)  # the entry's target: older configs' spelling
          or eps.get(MOVED_STRATEGIES.get(name, "")))
    if ep is None:
        raise ValueError(f"factory: {name!r} is not a registered strategy; registered: {', '.join(sorted(eps))} "
                         f"(packages add theirs in the {STRATEGY_GROUP!r} entry-point group)")
    return ep


def strategy_factory(name: str) -> Callable[..., Any]:
    """The registered factory `name` (callable(catalog=, model_dir=, **options) -> a search-shape object)."""
    try:
        return _registered(name).load()
    except ValueError as e:
        raise ConfigError(f"strategies.direct.{e}") from None


class SharedStrategies:
    """Searchers built once per run and their rankings remembered (retrieval.strategy.RankingMemo): one `dlsearch
    evaluate` asks for the same direct search as its own system and inside the router; both get one object, so the
    model is loaded once and each conversation is searched once.

        shared = SharedStrategies()
        a = shared.build(direct_from_config, catalog=catalog, model_dir="m", index="t")
        b = shared.build(direct_from_config, catalog=catalog, model_dir="./m", index="t", beams=20)   # a is b

    Two calls share when they name one factory with the same arguments once defaults are filled in (the catalog
    compared by content hash, path arguments once resolved). For one run only: a memo is never emptied.

    `store_dir`: each searcher's rankings are also appended to <store_dir>/<factory>-<hash>.jsonl as they are made
    (retrieval.strategy.RankingMemo); with `resume` a rerun reuses those whose searcher is the same: same factory and
    arguments, same files under its path arguments (name, size, modification time), same torch and dlsearch code."""

    PATH_ARGS = ("model_dir", "index", "adapter")

    def __init__(self, store_dir: str | Path | None = None, *, resume: bool = False) -> None:
        self.built: dict[str, Any] = {}
        self.store_dir, self.resume = (Path(store_dir) if store_dir is not None else None), resume

    def identity(self, key: str) -> str:
        """What a stored ranking was made by: the build key, the files its path arguments name, torch, our code."""
        import torch

        args = json.loads(key)[1]
        files = {name: files_fingerprint(Path(args[name])) for name in self.PATH_ARGS if args.get(name)}
        return json.dumps([key, files, torch.__version__, code_fingerprint()], sort_keys=True)

    def key(self, factory: Callable[..., Any], kwargs: dict[str, Any]) -> str:
        import inspect

        try:
            bound = inspect.signature(factory).bind(**kwargs)
            bound.apply_defaults()
            args = dict(bound.arguments)
        except (TypeError, ValueError):  # a signature inspect cannot read: the arguments as given
            args = dict(kwargs)
        for name, v in list(args.items()):
            if isinstance(v, Catalog):
                args[name] = "catalog:" + v.content_hash()
            elif name in self.PATH_ARGS and v:
                args[name] = str(Path(v).resolve())
        return json.dumps([f"{factory.__module__}:{factory.__qualname__}", args], sort_keys=True, default=repr)

    def build(self, factory: Callable[..., Any], **kwargs: Any) -> Any:
        """`factory(**kwargs)` wrapped in a RankingMemo, built on the first call with these arguments."""
        from dlsearch.retrieval.strategy import RankingMemo

        key = self.key(factory, kwargs)
        if key not in self.built:
            store = identity = None
            if self.store_dir is not None:
                identity = self.identity(key)
                digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]
                store = self.store_dir / f"{getattr(factory, '__name__', 'searcher')}-{digest}.jsonl"
            self.built[key] = RankingMemo(factory(**kwargs), store=store, identity=identity or "", resume=self.resume)
        return self.built[key]

    def counts(self) -> dict[str, dict[str, int]]:
        """Conversations each shared searcher computed and reused (`dlsearch evaluate` reports them)."""
        out: dict[str, dict[str, int]] = {}
        for key, memo in self.built.items():
            name = json.loads(key)[0]  # the factory; a second build of it with other arguments is "<factory>#2"
            label = name if name not in out else f"{name}#{sum(n.split('#')[0] == name for n in out) + 1}"
            out[label] = {"computed": memo.computed, "reused": memo.reused,
                          **({"from_store": memo.stored, "store": str(memo.store)} if memo.store is not None else {})}
        return out


def files_fingerprint(path: Path) -> list[Any]:
    """Name, size and modification time of every file under `path` (a file, or a dir without its checkpoints/):
    a model retrained or an index rebuilt in place changes it."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "checkpoints")
        for name in sorted(files):
            st = Path(root, name).stat()
            out.append([os.path.relpath(Path(root, name), path), st.st_size, st.st_mtime_ns])
    return out


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the installed dlsearch package's Python sources: stored rankings are not reused across code edits."""
    import importlib.util

    h = hashlib.sha256()
    for pkg in ("dlsearch", *(f"dlsearch.{n}" for n in ("data", "decoding", "evaluation", "finetune", "retrieval"))):
        for root in importlib.util.find_spec(pkg).submodule_search_locations:  # the folders each installs from
            for f in sorted(Path(root).resolve().rglob("*.py")):
                h.update(f"{pkg}/{f.relative_to(Path(root).resolve())}".encode() + f.read_bytes())
    return h.hexdigest()


def _one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")


def _need_index(enabled: bool, index: str | None, kind: str) -> None:
    if enabled and not index:
        raise ValueError(f"index: required while enabled (a dir from `dlsearch index build --kind {kind}`)")


@dataclass
class DirectSettings:
    enabled: bool = True
    factory: str = "direct"  # a registered strategy factory (registered_strategies())
    options: dict[str, Any] = field(default_factory=dict)  # passed to the factory, e.g. {index: runs/trie, beams: 20}

    def __post_init__(self) -> None:
        _registered(self.factory)


@dataclass
class DualSettings:
    enabled: bool = True
    index: str | None = None

    def __post_init__(self) -> None:
        _need_index(self.enabled, self.index, "dual")


@dataclass
class ConceptSettings:
    enabled: bool = True
    index: str | None = None
    aggregate: str = "mean"
    concepts_from: str = "meta"
    snap: bool = False

    def __post_init__(self) -> None:
        from dlsearch.retrieval.concept import AGGREGATES

        _need_index(self.enabled, self.index, "concept")
        _one_of("aggregate", self.aggregate, tuple(AGGREGATES))
        _one_of("concepts_from", self.concepts_from, ("meta", "model"))


@dataclass
class BM25Settings:
    enabled: bool = True
    index: str | None = None  # None: build in memory
    query_from: str = "conversation"
    query_stopwords: str | list[str] = "chat"  # chat (movie-chat words) | none | [word, ...]

    def __post_init__(self) -> None:
        _one_of("query_from", self.query_from, QUERY_FROM)
        from dlsearch.retrieval.bm25 import query_stopwords

        query_stopwords(self.query_stopwords)


@dataclass
class SearchAPISettings:
    enabled: bool = True
    endpoint: str | None = None
    preset: str | None = "dlsearch"
    mapping: dict[str, Any] | None = None
    timeout: float = 2.0
    retries: int = 2
    max_response_bytes: int = 8 << 20
    query_from: str = "conversation"

    def __post_init__(self) -> None:
        if self.enabled and not self.endpoint:
            raise ValueError("endpoint: required while enabled (e.g. http://127.0.0.1:8000 from dlsearch serve-search)")
        if self.timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"retries: must be >= 0, got {self.retries}")
        if self.max_response_bytes < 1:
            raise ValueError(f"max_response_bytes: must be >= 1, got {self.max_response_bytes}")
        _one_of("query_from", self.query_from, QUERY_FROM)


@dataclass
class StrategiesConfig:  # a strategy left out (or null) is not built
    direct: DirectSettings | None = None
    dual: DualSettings | None = None
    concept: ConceptSettings | None = None
    bm25: BM25Settings | None = None
    search_api: SearchAPISettings | None = None


@dataclass
class RecommendConfig:
    catalog: str = ""
    k: int = 10
    cache_dir: str | None = None
    model_dir: str | None = None
    policy: Policy = field(default_factory=Policy)
    strategies: StrategiesConfig = field(default_factory=StrategiesConfig)

    def __post_init__(self) -> None:
        if not self.catalog:
            raise ValueError("catalog: required (path to the catalog.jsonl every index was built from)")
        if self.k < 1:
            raise ValueError(f"k: must be >= 1, got {self.k}")


STRATEGY_KEYS: dict[str, set[str]] = {f.name: {g.name for g in dataclasses.fields(typing.get_type_hints(StrategiesConfig)[f.name].__args__[0])}
                                      for f in dataclasses.fields(StrategiesConfig)}


def _check(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return d


def read_config(path: str | Path, overrides: dict[str, Any] | None = None, *, sets: Sequence[str] = ()) -> dict[str, Any]:
    """A recommend config file, with `overrides` (top-level keys) and `sets` (`a.b.c=value`, the --set syntax of every
    verb) applied, validated by check_config."""
    tree = {**load_yaml(path), **(overrides or {})}
    apply_overrides(tree, sets)
    return resolve_config_paths(check_config(tree, str(path)), path)


def resolve_config_paths(cfg: dict[str, Any], config: str | Path) -> dict[str, Any]:
    """The checked config with every path it reads resolved relative to the config file `config` first (then the
    working directory, then the shipped configs: data.config.resolve_input_path)."""
    from dlsearch.data.config import resolve_config_path, resolve_input_path

    config = resolve_config_path(config)
    for key in ("catalog", "model_dir"):
        cfg[key] = resolve_input_path(cfg.get(key), config)
    for name, sc in (cfg.get("strategies") or {}).items():
        if not isinstance(sc, dict):
            continue
        if "index" in sc:
            sc["index"] = resolve_input_path(sc["index"], config)
        options = sc.get("options") or {}
        for key in ("index", "adapter"):
            if isinstance(options.get(key), str):
                options[key] = resolve_input_path(options[key], config)
    return cfg


def check_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a recommend config mapping (also the body of configs/serve.yaml) with the shared validator
    (data/config.py): unknown keys (with the closest valid name), wrong types and out-of-range values are a
    ConfigError naming `where` and the dotted key. Returns the checked config as plain data (every default filled
    in, strategies left out absent)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: the top level must be a mapping, got {type(cfg).__name__}")
    tree = {k: v for k, v in cfg.items() if not (k in ("policy", "strategies") and v is None)}
    try:
        checked = to_dict(from_dict(RecommendConfig, tree))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    checked["strategies"] = {n: sc for n, sc in checked["strategies"].items() if sc is not None}
    return checked


def task_generator(model_dir: str | Path, catalog: Catalog) -> Any:
    """The model that writes queries and concepts for the fallbacks (`query_from: model`, `concepts_from: model`),
    rendering conversations in the window its recipe trained on (manifest: data.max_messages, max_length)."""
    from dlsearch.decoding.direct import trained_max_length, trained_max_messages
    from dlsearch.finetune.loading import load_model
    from dlsearch.retrieval.generate import TaskGenerator

    model, tokenizer, _ = load_model(model_dir, catalog=catalog)
    return TaskGenerator(model, tokenizer, catalog, max_messages=trained_max_messages(model, model_dir),
                         max_length=trained_max_length(model, model_dir))


def build_router(cfg: dict[str, Any], catalog: Catalog | None = None, *, shared: SharedStrategies | None = None) -> Router:
    """Construct every enabled strategy; a strategy that cannot be built (missing index, bad endpoint) is an error,
    not a silent fallback: the config says it should exist. With `shared` (one evaluation run), direct search is
    built through it: the same searcher, and the rankings, as the run's own 'direct' system."""
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
            generator = task_generator(model_dir, catalog)
        return generator

    strategies: dict[str, Any] = {}
    for name, sc in (cfg.get("strategies") or {}).items():
        sc = sc or {}
        if not sc.get("enabled", True):
            continue
        if name == "direct":
            factory, options = strategy_factory(sc["factory"]), dict(catalog=catalog, model_dir=model_dir, **(sc.get("options") or {}))
            searcher = shared.build(factory, **options) if shared is not None else factory(**options)
            strategies[name] = searcher  # reads conversations (the router passes them to "direct" as they are)
        elif name == "dual":
            strategies[name] = load_dual_search(sc["index"], catalog, cache_dir=cache_dir)  # the router feeds it conversation text
        elif name == "concept":
            search = load_concept_search(sc["index"], catalog, aggregate=sc.get("aggregate", "mean"), cache_dir=cache_dir)
            source, snap = sc.get("concepts_from", "meta"), sc.get("snap", False)
            vocab = sorted(search.vocabulary)
            if snap and not vocab:  # every generated concept would be dropped: the strategy would never answer
                raise ConfigError(f"strategies.concept.snap: the catalog {cfg['catalog']} has no concepts to snap to; set "
                                  f"snap: false (generated concepts are searched as written) or add a concepts column")

            def to_concepts(conv: Conversation, source=source, snap=snap, vocab=vocab) -> list[str] | None:
                concepts = conv.meta.get("concepts") if source == "meta" else gen().concepts(conv)
                if not concepts:
                    return None
                return snap_to_vocabulary(concepts, vocab, cache_dir=cache_dir) if snap else list(concepts)

            strategies[name] = SearcherStrategy(name, search, to_concepts)
        else:
            if name == "bm25":
                searcher = load_bm25(sc.get("index"), catalog, query_stopwords=sc.get("query_stopwords", "chat"))
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
    policy = Policy.from_dict(cfg.get("policy") or {})
    return Router(catalog, strategies, policy, memorization=memorization)


def load_router(path: str | Path, overrides: dict[str, Any] | None = None, *, sets: Sequence[str] = ()) -> tuple[Router, int]:
    cfg = read_config(path, overrides, sets=sets)
    return build_router(cfg), int(cfg.get("k", 10))


def recommend_file(config: str | Path, input_path: str | Path, out_path: str | Path, *, overrides: dict[str, Any] | None = None,
                   batch_size: int = 64, resume: bool = False, sets: Sequence[str] = ()) -> dict[str, Any]:
    """Predictions for every conversation of `input_path`, appended to `out_path` batch by batch (a killed run keeps
    its finished batches; `resume` skips the conversations already written). Every conversation gets its line, with
    `degraded` naming the strategies that failed for it; each batch's plan, ids and failures are appended to
    `OUT.decisions.jsonl`."""
    from tqdm import tqdm

    from dlsearch.data.formats import PredictionLog

    cfg = read_config(config, overrides, sets=sets)
    convs = load_conversations(input_path)  # a bad line is named before any model or index is loaded
    router, k = build_router(cfg), int(cfg.get("k", 10))
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
