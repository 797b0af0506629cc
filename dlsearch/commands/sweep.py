"""`dlsearch sweep`: memorization against catalog size, with the fallbacks' recall and the crossover size."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlsearch.evaluation.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="memorization vs catalog size: table + PNG curves + crossover (cached, resumable)")
    p.add_argument("--config", help="YAML, e.g. configs/sweep-movielens.yaml or configs/sweep-tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. sizes=[250,1000]")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="instead of running: put finished sweeps (their out dirs) "
                   "on one chart and table; dirs with the same --label are one series, their points merged")
    p.add_argument("--label", nargs="+", metavar="NAME", help="one name per --compare dir; without it, each sweep's own name")
    p.add_argument("--out", default="runs/sweep-compare", help="with --compare: where compare.{json,md,png} go")
    p.set_defaults(func=cmd_sweep)


def cmd_compare(args: argparse.Namespace) -> int:
    from dlsearch.app.sweep import comparison_summary, comparison_table, compare_sweeps, write_comparison

    labels = args.label or [None] * len(args.compare)  # None: each sweep's own name
    if len(labels) != len(args.compare):
        raise ValueError(f"--label: {len(labels)} name(s) for {len(args.compare)} --compare dir(s); give one per dir")
    cmp = compare_sweeps(list(zip(labels, args.compare)))
    paths = write_comparison(cmp, Path(args.out))
    head, rows = comparison_table(cmp)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="memorization against catalog size, by series")
    for col in head:
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(*r)
    console = Console(width=max(Console().width, 150))
    console.print(table)
    for line in comparison_summary(cmp):
        console.print(line)
    print("  ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.compare:
        if args.config or args.set:
            raise ValueError("--compare reads finished sweeps; it takes no --config / --set")
        return cmd_compare(args)
    if not args.config:
        raise ValueError("dlsearch sweep needs --config (run a sweep) or --compare DIR ... (chart finished ones)")
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
