"""`dlsearch finetune --config configs/<recipe>.yaml [--set key=value] [--resume]` (same code as
`accelerate launch -m dlsearch.finetune ...`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from dlsearch.finetune.cli import add_arguments

    p = sub.add_parser("finetune", help="run a fine-tuning recipe (full / LoRA / QLoRA stages, memorization measured)")
    add_arguments(p)
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from dlsearch.finetune.cli import run

    return run(args)
