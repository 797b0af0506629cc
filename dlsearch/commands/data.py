"""`dlsearch data validate|prepare`.

    dlsearch data prepare --dataset redial --ids semantic --out runs/redial-semantic
    dlsearch data validate data/datasets/redial/movies_with_mentions.csv --columns id=movieId,title=movieName
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dlsearch.data.ids import SCHEMES
from dlsearch.data.loaders import load_catalog


def _columns(text: str) -> dict[str, str]:
    """'id=movieId,title=movieName' -> {'id': 'movieId', 'title': 'movieName'}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise argparse.ArgumentTypeError(f"bad column mapping {part!r}; write FIELD=COLUMN, e.g. id=movieId")
        out[field.strip()] = column.strip()
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="validate and prepare catalogs and examples")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="VERB")
    v = dsub.add_parser("validate", help="validate a catalog file; exits non-zero naming file, line and field")
    v.add_argument("path", help="catalog file: .jsonl (catalog format), .csv or .parquet")
    v.add_argument("--columns", type=_columns, default=None,
                   help="catalog field to file column, e.g. id=movieId,title=movieName,concepts=genres")
    v.add_argument("--concept-sep", default="|", help="separator of a text concepts column (default '|')")
    v.add_argument("--format", dest="fmt", choices=["json", "csv", "parquet"], default=None,
                   help="override the format the suffix implies")
    v.set_defaults(func=cmd_validate)

    pr = dsub.add_parser("prepare", help="write catalog, id map, splits, examples and a manifest (re-runnable)")
    pr.add_argument("--dataset", required=True, help="redial | movielens | PATH (catalog file, or folder with "
                    "catalog.jsonl and optional conversations.jsonl)")
    pr.add_argument("--ids", required=True, choices=list(SCHEMES), help="item-id scheme")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--seed", type=int, default=0, help="seed of splits and id schemes (default 0)")
    pr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="id-scheme parameter, repeatable, e.g. --param codebook_size=128 --param levels=3")
    pr.add_argument("--cache-dir", default=None, help="embedding cache (default $DLSEARCH_CACHE_DIR or ~/.cache/dlsearch)")
    pr.add_argument("--columns", type=_columns, default=None, help="for a CSV/parquet/JSONL PATH: as in `data validate`")
    pr.add_argument("--concept-sep", default="|", help="separator of a text concepts column (default '|')")
    pr.set_defaults(func=cmd_prepare)


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad --param {text!r}; write KEY=VALUE, e.g. codebook_size=128")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_prepare(args: argparse.Namespace) -> int:
    from dlsearch.data.prepare import prepare

    prepare(args.dataset, args.ids, args.out, seed=args.seed, scheme_params=dict(map(_param, args.param)),
            cache_dir=args.cache_dir, columns=args.columns, concept_sep=args.concept_sep)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cat = load_catalog(args.path, args.columns, concept_sep=args.concept_sep, fmt=args.fmt)
    summary = cat.summary()
    optional = (("text", "with_text"), ("concepts", "with_concepts"), ("meta", "with_meta"))
    fields = ["id", "title"] + [f for f, n in optional if summary[n]]
    print(json.dumps({"path": args.path, "fields_present": fields, **summary}, indent=2))
    return 0
