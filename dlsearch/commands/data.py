"""`dlsearch data validate|prepare`."""

from __future__ import annotations

import argparse
import json

from data.catalog import load_catalog_jsonl


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="validate and prepare catalogs and examples")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="VERB")
    v = dsub.add_parser("validate", help="validate a catalog file; exits non-zero naming file, line and field")
    v.add_argument("path", help="catalog JSONL")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    cat = load_catalog_jsonl(args.path)
    print(json.dumps({"path": args.path, **cat.summary()}, indent=2))
    return 0
