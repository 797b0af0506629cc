"""Argument parsing shared by `python -m dlsearch.finetune` / `accelerate launch -m dlsearch.finetune` and `dlsearch finetune`."""

from __future__ import annotations

import argparse
import json
import sys

from dlsearch.finetune.config import ConfigError, load_recipe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="recipe YAML in configs/ (its first line is the launch command)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set stages.index.train.lr=3e-3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue the current one from its last checkpoint")


def run(args: argparse.Namespace) -> int:
    from dlsearch.finetune.train import run_recipe

    cfg = load_recipe(args.config, args.overrides)
    infos = run_recipe(cfg, resume=args.resume)
    short = [{k: v for k, v in i.items() if k != "losses"} for i in infos]
    print(json.dumps(short, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dlsearch.finetune", description="Run a fine-tuning recipe.")
    add_arguments(p)
    args = p.parse_args(argv)
    from dlsearch.finetune.config import TrainingInterrupted

    try:
        return run(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code  # 128 + the signal: 143 after SIGTERM, 130 after Ctrl-C
