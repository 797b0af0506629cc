"""`dlsearch evaluate`: build the task, the baselines and the requested systems, score, write and print.

    dlsearch evaluate --config configs/evaluate-redial.yaml --predictions runs/direct/predictions.jsonl
    dlsearch evaluate --task movielens-loo --strategies popularity bm25 --out runs/eval-movielens
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsearch.evaluation.config import config_to_dict
from dlsearch.evaluation.protocol import (
    BASELINES,
    DEFAULT_DEPTH,
    DEFAULT_METRICS,
    MODES,
    EvalTask,
    System,
    baseline_systems,
    evaluate_systems,
    movielens_loo_task,
    predictions_system,
    print_report,
    conversation_turns_task,
    prepared_histories_task,
    write_report,
)

# turns: recommender turns of a prepared dir's test split (any dataset; redial-turns is the same task);
# next-item: leave-one-out on a prepared dir's histories; movielens-loo: the bundled MovieLens histories.
TASKS = ("turns", "next-item", "redial-turns", "movielens-loo")


@dataclass
class EvaluateConfig:
    # turns (= redial-turns): recommender turns of a prepared dir's test split, named after its dataset;
    # next-item: leave-one-out on a prepared dir's histories; movielens-loo: leave-one-out on MovieLens.
    task: str = "turns"
    # turns / next-item: a `dlsearch data prepare` output dir. movielens-loo: a MovieLens folder
    # (ml-latest-small layout); empty = the bundled copy.
    data: str = ""
    # predictions JSONL files (data/formats.py), one system each; ids must be the task's query ids.
    predictions: list[str] = field(default_factory=list)
    # strategies run here in addition to the baselines (which are always run): popularity, bm25, or names
    # registered by the other areas (see evaluation.strategies).
    strategies: list[str] = field(default_factory=list)
    # options passed to the strategy builders (model_dir, index_dir, beams, ...).
    strategy_options: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    # ranking depth per query; larger is slower for model strategies, MRR is MRR@depth.
    depth: int = DEFAULT_DEPTH
    modes: list[str] = field(default_factory=lambda: list(MODES))
    seed: int = 0
    # bootstrap resamples for intervals (paired tests use 10x); 1000 keeps intervals stable to ~0.005.
    n_resamples: int = 1000
    # conversation messages BM25 reads (the last N); 0 = all of them.
    bm25_max_messages: int = 0
    out: str = "runs/evaluate"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {self.modes}")
        if self.depth < 1 or self.n_resamples < 10:
            raise ValueError("depth must be >= 1 and n_resamples >= 10")


OPTION_PATHS = ("model_dir", "trie", "adapter", "dual_index", "recommend_config")  # strategy_options that name inputs


def resolve_config_paths(tree: dict[str, Any], config: str | Path) -> dict[str, Any]:
    """An evaluate config tree (file plus --set) with the paths it reads — data, predictions, the strategy options
    naming a model, index or config — relative to the config file first, then the working directory
    (data.config.resolve_input_path). `out` stays relative to the working directory."""
    from dlsearch.data.config import resolve_config_path, resolve_input_path

    config = resolve_config_path(config)
    tree = dict(tree)
    if isinstance(tree.get("data"), str):
        tree["data"] = resolve_input_path(tree["data"], config)
    if isinstance(tree.get("predictions"), list):
        tree["predictions"] = [resolve_input_path(p, config) if isinstance(p, str) else p for p in tree["predictions"]]
    if isinstance(tree.get("strategy_options"), dict):
        tree["strategy_options"] = {k: resolve_input_path(v, config) if k in OPTION_PATHS and isinstance(v, str) else v
                                    for k, v in tree["strategy_options"].items()}
    return tree


def build_task(cfg: EvaluateConfig) -> EvalTask:
    """The evaluation task named by the config, from its data directory."""
    if cfg.task in ("turns", "redial-turns", "next-item"):
        if not cfg.data:
            raise ValueError(f"task {cfg.task} needs data: a `dlsearch data prepare --out DIR` directory")
        return prepared_histories_task(cfg.data) if cfg.task == "next-item" else conversation_turns_task(cfg.data)
    from dlsearch.data.movielens import load_movielens  # foundation area; imported here so redial-only use does not need it

    catalog, histories = load_movielens(cfg.data or None)
    return movielens_loo_task(catalog, histories)


def run_evaluation(cfg: EvaluateConfig, *, console: Any = None, print_table: bool = True,
                   resume: bool = False) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate baselines + strategies + prediction files on the task; write JSON/CSV/TREC under cfg.out.
    Model searchers (direct search, also inside the router) append their rankings to <out>/rankings/ as they go;
    `resume` reuses those an interrupted run of the same searcher wrote (app.recommend.SharedStrategies)."""
    from dlsearch.app.recommend import SharedStrategies
    from dlsearch.app.strategies import build_strategy

    t0 = time.perf_counter()
    task = build_task(cfg)
    systems: dict[str, System] = dict(baseline_systems(task, bm25_max_messages=cfg.bm25_max_messages or None))
    # 'direct' and the router's direct search: one model, one search per conversation, kept on disk as it goes
    shared = SharedStrategies(Path(cfg.out) / "rankings" if cfg.out else None, resume=resume)
    for name in cfg.strategies:
        if name not in systems:
            systems[name] = build_strategy(name, task, cfg.strategy_options, shared=shared)
    pred_hashes, stray_counts = {}, {}
    for path in cfg.predictions:
        name, by_id, digest = predictions_system(path)
        unknown = set(by_id) - {q.id for q in task.queries}
        if by_id and len(unknown) == len(by_id):
            raise ValueError(f"{path}: none of its prediction ids match the task's query ids (e.g. {sorted(unknown)[:3]})")
        items = [s.item_id for p in by_id.values() for s in p.items]
        strays = {i for i in items if i not in task.catalog}
        stray = sorted(strays)
        if items and len(stray) == len(set(items)):
            raise ValueError(f"{path}: none of its items is an id of the task's catalog (e.g. {stray[:3]}): the run was "
                             f"made on another catalog, or it names codes or titles instead of item ids")
        if stray:  # scored as misses, as an unconstrained model's invalid answers are; said, not hidden
            n = sum(i in strays for i in items)
            warnings.warn(f"{path}: {n} of {len(items)} predicted items are not in the task's catalog (e.g. {stray[:3]}); "
                          f"they are scored as misses", stacklevel=2)
            stray_counts[str(path)] = {"items": n, "of": len(items), "examples": stray[:5]}
        if name in systems:
            name = f"{name}:{Path(path).stem}"
        systems[name] = by_id
        pred_hashes[f"predictions:{name}"] = digest
    report = evaluate_systems(
        task, systems, metrics=cfg.metrics, depth=cfg.depth, modes=cfg.modes, baselines=BASELINES, seed=cfg.seed,
        n_resamples=cfg.n_resamples, config=config_to_dict(cfg),
    )
    report["hashes"] = {**report["hashes"], **pred_hashes}
    if stray_counts:
        report["predicted_items_not_in_catalog"] = stray_counts
    # per shared searcher: conversations searched, and rankings reused by another system (the router)
    report["shared_searches"] = shared.counts()
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)
    paths = write_report(report, task, cfg.out)
    if print_table:
        print_report(report, console)
    return report, paths
