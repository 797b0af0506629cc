"""`dlsearch sweep`: memorization against catalog size, with the fallbacks' recall and the crossover size."""

from __future__ import annotations

import argparse

from dlsearch.evaluation.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="memorization vs catalog size: table + PNG curves + crossover (cached, resumable)")
    p.add_argument("--config", required=True, help="YAML, e.g. configs/sweep-movielens.yaml or configs/sweep-tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. sizes=[250,1000]")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from dlsearch.app.sweep import SweepConfig, print_sweep, run_sweep
    from dlsearch.app.sweep_steps import default_steps

    from dlsearch.data.config import resolve_input_path

    cfg = load_config(args.config, SweepConfig, overrides=args.set)
    # what the config file names for reading is found next to it first (then the working directory); `out` is not
    cfg.catalog, cfg.data = resolve_input_path(cfg.catalog, args.config), resolve_input_path(cfg.data, args.config)
    result = run_sweep(cfg, default_steps(), config_path=args.config)
    print_sweep(result)
    print(f"table: {cfg.out}/sweep.csv  json: {cfg.out}/sweep.json  plot: {cfg.out}/sweep.png")
    return 0
