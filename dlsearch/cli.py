"""The `dlsearch` command line. Thin: every verb parses its arguments and calls the package that does the work.

    dlsearch --help
"""

from __future__ import annotations

import argparse
import sys

from dlsearch.commands import data as data_cmd
from dlsearch.commands import evaluate as evaluate_cmd
from dlsearch.commands import finetune as finetune_cmd
from dlsearch.commands import generate as generate_cmd
from dlsearch.commands import index as index_cmd
from dlsearch.commands import model as model_cmd
from dlsearch.commands import recommend as recommend_cmd
from dlsearch.commands import serve as serve_cmd
from dlsearch.commands import serve_search as serve_search_cmd
from dlsearch.commands import quickstart as quickstart_cmd
from dlsearch.commands import sweep as sweep_cmd

# Each command module adds its verbs; the order here is the order `--help` lists them (the order of the loop:
# data -> model -> finetune -> index -> generate -> recommend / serve-search -> evaluate / sweep).
COMMAND_MODULES = [data_cmd, model_cmd, finetune_cmd, index_cmd, generate_cmd, recommend_cmd, serve_cmd, serve_search_cmd, evaluate_cmd, sweep_cmd, quickstart_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlsearch", description="Direct LLM search over an item catalog.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.register(sub)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every verb's --help shows each flag's default (set once here, not in each command module)."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


def quiet_third_party_loggers() -> None:
    """peft imports bitsandbytes whenever it is installed, and on CPUs with AVX512-BF16 bitsandbytes then warns at
    import that an optional 4-bit matmul kernel (`pip install kernels`) is missing: noise on every command that loads
    a model, relevant only to QLoRA on CPU (which falls back to its slower path). trl 1.x reads transformers 5's
    deprecated `is_gradient_checkpointing` on every training step set-up, a FutureWarning the user cannot act on.
    Errors, and every other warning, still show."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_loggers()
    parser = build_parser()
    args = parser.parse_args(argv)
    from dlsearch.finetune.config import TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as e:  # SIGTERM or Ctrl-C during training: the step reached is saved
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code  # 128 + the signal: 143 after SIGTERM, 130 after Ctrl-C
    except (ValueError, FileNotFoundError) as e:
        # User-facing errors (bad catalogs, configs, paths) print one clear line, not a traceback. A KeyError is a
        # bug (a missing key in user input is refused by name as a ValueError), so it keeps its traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
