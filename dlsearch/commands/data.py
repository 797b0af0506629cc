"""`dlsearch data validate|prepare`.

    dlsearch data validate data/datasets/redial/movies_with_mentions.csv --columns id=movieId,title=movieName
"""

from __future__ import annotations

import argparse
import json

from data.loaders import load_catalog


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


def cmd_validate(args: argparse.Namespace) -> int:
    cat = load_catalog(args.path, args.columns, concept_sep=args.concept_sep, fmt=args.fmt)
    summary = cat.summary()
    optional = (("text", "with_text"), ("concepts", "with_concepts"), ("meta", "with_meta"))
    fields = ["id", "title"] + [f for f, n in optional if summary[n]]
    print(json.dumps({"path": args.path, "fields_present": fields, **summary}, indent=2))
    return 0
