"""`dlsearch data validate|prepare`.

    dlsearch data prepare --dataset redial --ids semantic --out runs/redial-semantic
    dlsearch data validate data/datasets/redial/movies_with_mentions.csv --columns id=movieId,title=movieName
    dlsearch data validate my-dataset/          # catalog, conversations and histories of a dataset folder
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dlsearch.data.catalog import MAX_TEXT_BYTES, MAX_TITLE_CHARS
from dlsearch.data.ids import SCHEMES


def _columns(text: str) -> dict[str, str]:
    """'id=movieId,title=movieName' -> {'id': 'movieId', 'title': 'movieName'}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise argparse.ArgumentTypeError(f"bad column mapping {part!r}; write FIELD=COLUMN, e.g. id=movieId")
        out[field.strip()] = column.strip()
    return out


def _limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-title-chars", type=_bound, default=MAX_TITLE_CHARS,
                   help=f"longest title accepted, in characters (default {MAX_TITLE_CHARS}; 'none': unbounded)")
    p.add_argument("--max-text-bytes", type=_bound, default=MAX_TEXT_BYTES,
                   help=f"longest item text accepted, in UTF-8 bytes (default {MAX_TEXT_BYTES}; 'none': unbounded)")


def _bound(text: str) -> int | None:
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def _reading(p: argparse.ArgumentParser) -> None:
    p.add_argument("--columns", type=_columns, default=None,
                   help="catalog field to file column, e.g. id=movieId,title=movieName,concepts=genres")
    p.add_argument("--concept-sep", default="|", help="separator of a text concepts column (default '|')")
    p.add_argument("--delimiter", default=None, help="CSV/TSV field delimiter (default ',' for .csv, tab for .tsv)")
    _limits(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="validate and prepare catalogs and examples")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="VERB")
    v = dsub.add_parser("validate", help="validate a catalog file or a dataset folder (catalog, conversations, "
                        "histories); exits non-zero naming file, line and field")
    v.add_argument("path", help="catalog file (.jsonl, .csv, .tsv, .parquet) or dataset folder (docs/own-data.md)")
    v.add_argument("--conversations", action="append", default=[], help="conversations file to check against the catalog (repeatable)")
    v.add_argument("--histories", default=None, help="histories file to check against the catalog")
    v.add_argument("--format", dest="fmt", choices=["json", "csv", "tsv", "parquet"], default=None,
                   help="override the format the catalog file's suffix implies")
    v.add_argument("--tokenizer", default=None, help="tokenizer dir: also report ids that collide after tokenization")
    _reading(v)
    v.set_defaults(func=cmd_validate)

    pr = dsub.add_parser("prepare", help="write catalog, id map, splits, examples and a manifest (re-runnable)")
    pr.add_argument("--dataset", required=True, help="redial | movielens | PATH (catalog file, or dataset folder: "
                    "catalog.<ext>, conversations.<ext> or train|dev|test.<ext>, histories.<ext>; docs/own-data.md)")
    pr.add_argument("--ids", required=True, choices=list(SCHEMES), help="item-id scheme")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--split", choices=["seeded", "keep"], default="seeded",
                    help="seeded: by dialogue, 80/10/10 under --seed (default); keep: the dataset's own split "
                    "(a 'split' field/column, or train/dev/test files)")
    pr.add_argument("--seed", type=int, default=0, help="seed of splits and id schemes (default 0)")
    pr.add_argument("--name", default=None, help="dataset name in reports (default: the file or folder name)")
    pr.add_argument("--max-items", type=int, default=None, help="keep only the first N catalog items (default: all)")
    pr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="id-scheme parameter, repeatable, e.g. --param codebook_size=128 --param levels=3")
    pr.add_argument("--cache-dir", default=None, help="embedding cache (default $DLSEARCH_CACHE_DIR or ~/.cache/dlsearch)")
    pr.add_argument("--histories", choices=["movielens"], default=None,
                    help="redial only: add MovieLens's rating histories moved onto the ReDial movies they link to "
                         "(training rows for history->next_item over the same catalog)")
    pr.add_argument("--validation-into-train", action="store_true",
                    help="split as usual, then train on the validation conversations too (the refit once settings "
                         "were chosen on validation): the same test dialogues, an empty validation split")
    _reading(pr)
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
            cache_dir=args.cache_dir, columns=args.columns, concept_sep=args.concept_sep, split=args.split,
            delimiter=args.delimiter, max_items=args.max_items, name=args.name,
            limits={"max_title_chars": args.max_title_chars, "max_text_bytes": args.max_text_bytes},
            extra_histories=args.histories, validation_into_train=args.validation_into_train)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from dlsearch.data.validate import validate_dataset

    report = validate_dataset(args.path, columns=args.columns, concept_sep=args.concept_sep, fmt=args.fmt,
                              delimiter=args.delimiter, conversations=args.conversations, histories=args.histories,
                              tokenizer=args.tokenizer,
                              limits={"max_title_chars": args.max_title_chars, "max_text_bytes": args.max_text_bytes})
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0
