"""`dlsearch recommend`: the router over a conversations file.

    dlsearch recommend --config configs/recommend.yaml --input conversations.jsonl --out preds.jsonl [--k 20] [--resume]
"""

from __future__ import annotations

import argparse
import json
import logging

from dlsearch.commands import output_file, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="recommend items with direct search and fallbacks fused by a YAML policy")
    p.add_argument("--config", required=True, help="configs/recommend.yaml")
    p.add_argument("--input", required=True, help="conversations JSONL")
    p.add_argument("--out", required=True, help="predictions JSONL, appended batch by batch (decisions go to OUT.decisions.jsonl)")
    p.add_argument("--resume", action="store_true", help="keep OUT's finished lines and recommend only the conversations not in it")
    p.add_argument("--batch-size", type=positive_int, default=64, help="conversations per router call (and per write)")
    p.add_argument("--k", type=positive_int, default=None, help="override k")
    p.add_argument("--catalog", default=None, help="override the config's catalog path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. strategies.bm25.enabled=false or policy.weights.dual=2")
    p.set_defaults(func=cmd_recommend)


def cmd_recommend(args: argparse.Namespace) -> int:
    from dlsearch.app.recommend import recommend_file

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in (("k", args.k), ("catalog", args.catalog)) if v is not None}
    output_file(args.out)
    print(json.dumps(recommend_file(args.config, args.input, args.out, overrides=overrides,
                                    batch_size=args.batch_size, resume=args.resume, sets=args.set), indent=2))
    return 0
