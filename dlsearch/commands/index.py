"""`dlsearch index build --kind KIND ...`: one verb, one small builder per index kind.

    dlsearch index build --kind trie --catalog out/catalog.jsonl --idmap out/idmap.json --model runs/m --out runs/m/trie

    dlsearch index build --kind bm25|concept|dual --data runs/redial --out runs/redial/index/KIND   (see index_retrieval)

Kinds register in BUILDERS (kind -> builder(args) -> summary dict); each kind adds its own options in add_options.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from dlsearch.commands import index_retrieval


def _trie_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("trie")
    g.add_argument("--idmap", help="trie: id map JSON (the codes the model writes)")
    g.add_argument("--model", help="trie: model dir whose tokenizer the index is built for (fine-tuned, imported or a local HF dir)")
    g.add_argument("--mode", choices=("whole", "span"), default="whole",
                   help="trie: whole = the output is one item then EOS; span = items inside free text")
    g.add_argument("--source", choices=("id", "title"), default="id", help="trie: index id codes or titles")


def build_trie(args: argparse.Namespace) -> dict[str, Any]:
    import time

    from dlsearch.app.trie_index import build_model_trie

    if not args.model:
        raise ValueError("--kind trie needs --model (the model dir whose tokenizer will decode)")
    t0 = time.perf_counter()
    index = build_model_trie(args.model, args.out, catalog_path=catalog_path(args), idmap_path=args.idmap,
                             data_dir=args.data, mode=args.mode, source=args.source)
    return {"kind": "trie", "out": args.out, "items": len(index), "bytes": index.nbytes(),
            "seconds": round(time.perf_counter() - t0, 3), "mode": args.mode}


def catalog_path(args: argparse.Namespace) -> str:
    """--catalog, else DATA/catalog.jsonl from a `dlsearch data prepare` dir."""
    if args.catalog:
        return args.catalog
    if args.data:
        return str(Path(args.data) / "catalog.jsonl")
    raise ValueError("index build needs --catalog or --data (a `dlsearch data prepare` dir)")


# kind -> (add kind-specific options, builder).
BUILDERS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], dict]]] = {
    "trie": (_trie_options, build_trie),
    **{kind: (index_retrieval.add_arguments, index_retrieval.build) for kind in index_retrieval.KINDS},
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build search indexes (trie for constrained decoding, ...)")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="VERB")
    b = isub.add_parser("build", help="build an index of a catalog")
    b.add_argument("--kind", required=True, choices=sorted(BUILDERS), help="index kind")
    b.add_argument("--data", default=None, help="a `dlsearch data prepare` dir (catalog.jsonl, idmap.json, conversations/)")
    b.add_argument("--catalog", default=None, help="catalog JSONL (default: DATA/catalog.jsonl)")
    b.add_argument("--out", required=True, help="output directory")
    for add_options in dict.fromkeys(opts for opts, _ in BUILDERS.values()):
        add_options(b)
    b.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    _, builder = BUILDERS[args.kind]
    print(json.dumps(builder(args), indent=2))
    return 0
