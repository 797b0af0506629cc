"""`dlsearch evaluate`: score prediction files and strategies against the baselines, with intervals and tests."""

from __future__ import annotations

import argparse

from dlsearch.evaluation.config import apply_overrides, config_from_dict, load_yaml
from dlsearch.app.runner import TASKS, EvaluateConfig, resolve_config_paths, run_evaluation


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate predictions/strategies vs popularity and BM25 baselines (CI + paired test)")
    p.add_argument("--config", help="YAML (configs/evaluate-redial.yaml); flags below override its keys. Paths in it "
                   "are relative to it, then to the working directory; paths given as flags, to the working directory")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--data", help="prepared dir (`dlsearch data prepare`) for turns / next-item, or MovieLens folder (movielens-loo)")
    p.add_argument("--predictions", nargs="+", metavar="JSONL", help="predictions files, one system each")
    p.add_argument("--strategies", nargs="+", metavar="NAME", help="strategies to run here besides the baselines")
    p.add_argument("--out", help="output directory (results.json, results.csv, run-<mode>.trec)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--resume", action="store_true", help="reuse the rankings an interrupted run left in OUT/rankings/ "
                   "(model strategies write them as they go; only those of the same model, index, settings and code)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    flags = {k: getattr(args, k) for k in ("task", "data", "predictions", "strategies", "out", "seed") if getattr(args, k) is not None}
    data = apply_overrides(load_yaml(args.config) if args.config else {}, args.set)
    if args.config:  # paths in the file (and its --set values) are read relative to it; flags from the working directory
        data = resolve_config_paths(data, args.config)
    data = {**data, **flags}
    cfg = config_from_dict(data, EvaluateConfig, source=args.config or "command line")
    _, paths = run_evaluation(cfg, resume=args.resume)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
