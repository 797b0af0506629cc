"""`dlsearch index build --kind KIND ...`: one verb, one small builder per index kind.

    dlsearch index build --kind trie --catalog out/catalog.jsonl --idmap out/idmap.json --model runs/m --out runs/m/trie

    dlsearch index build --kind bm25|concept|dual --data runs/redial --out runs/redial/index/KIND   (see index_retrieval)

Kinds register in BUILDERS (kind -> builder(args) -> summary dict); each kind adds its own options in add_options.
"""

from __future__ import annotations

import argparse
import json
import os
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

    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.data.ids import IdMap, build_idmap
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.loading import load_tokenizer

    if not args.model:
        raise ValueError("--kind trie needs --model (the model dir whose tokenizer will decode)")
    t0 = time.perf_counter()
    catalog = load_catalog_jsonl(catalog_path(args))
    if args.idmap or args.data:
        idmap = IdMap.load(args.idmap or Path(args.data) / "idmap.json")
    else:
        idmap = build_idmap(catalog, "atomic")
    prepared = None
    if args.data:  # a model fine-tuned on another prepared dir must not be indexed with this one's id map
        from dlsearch.data.prepare import check_same_prepared, prepared_fingerprint
        from dlsearch.finetune.manifest import read_manifest

        if (Path(args.data) / "manifest.json").is_file():
            prepared = prepared_fingerprint(args.data)
            check_same_prepared(read_manifest(args.model).get("prepared"), args.data, what=f"model {args.model}")
    tokenizer = load_tokenizer(args.model)
    index = build_index(catalog, idmap, tokenizer, mode=args.mode, source=args.source)
    # stored relative to the index dir: the index can be moved together with its data, and read from any directory
    index.manifest["catalog_path"] = os.path.relpath(Path(catalog_path(args)).resolve(), Path(args.out).resolve())
    index.manifest["prepared"] = prepared
    index.save(args.out)
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
