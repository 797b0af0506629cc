"""Retrieval kinds of `dlsearch index build`: bm25, concept, dual (parser part + dispatch; see retrieval/build.py).

    dlsearch index build --kind bm25    --data runs/redial --out runs/redial/index/bm25
    dlsearch index build --kind concept --data runs/redial --out runs/redial/index/concept [--factory HNSW32]
    dlsearch index build --kind dual    --data runs/redial --out runs/redial/index/dual --config configs/dual_encoder.yaml --movielens
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlsearch.commands import positive_int

KINDS = ("bm25", "concept", "dual")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retrieval kinds (bm25, concept, dual)")
    g.add_argument("--factory", default="auto", help="faiss factory string: auto | Flat | HNSW32 | IVF1024,PQ48 ...")
    g.add_argument("--ef-search", type=positive_int, default=None, help="HNSW efSearch stored with the index")
    g.add_argument("--nprobe", type=positive_int, default=None, help="IVF nprobe stored with the index")
    g.add_argument("--cache-dir", default=".cache/embeddings", help="embedding cache dir")
    g.add_argument("--encoder", default=None, help="sentence-transformers dir (default: bundled all-MiniLM-L6-v2)")
    g.add_argument("--config", default=None, help="dual: configs/dual_encoder.yaml")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dual: override one config key (repeatable)")
    g.add_argument("--train", default=None, help="dual: training conversations (default: DATA/conversations/train.jsonl)")
    g.add_argument("--validation", default=None, help="dual: validation conversations (default: DATA/conversations/validation.jsonl)")
    g.add_argument("--movielens", nargs="?", const="", default=None, metavar="ROOT",
                   help="dual: add MovieLens history->next item pairs (bundled copy when ROOT is omitted)")


def _path(explicit: str | None, data: str | None, rel: str, what: str, required: bool = True) -> str | None:
    if explicit:
        return explicit
    if data:
        p = Path(data) / rel
        if p.exists() or required:
            return str(p)
        return None
    if required:
        raise ValueError(f"--{what} or --data is required")
    return None


def build(args: argparse.Namespace) -> dict:
    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.data.formats import load_conversations
    from dlsearch.retrieval import build as b

    catalog = load_catalog_jsonl(_path(args.catalog, args.data, "catalog.jsonl", "catalog"))
    params = {k: v for k, v in (("efSearch", args.ef_search), ("nprobe", args.nprobe)) if v is not None}
    if args.kind == "bm25":
        res = b.build_bm25_index(catalog, args.out)
    elif args.kind == "concept":
        res = b.build_concept(catalog, args.out, factory=args.factory, params=params, encoder_path=args.encoder, cache_dir=args.cache_dir)
    else:
        train = load_conversations(_path(args.train, args.data, "conversations/train.jsonl", "train"))
        vpath = _path(args.validation, args.data, "conversations/validation.jsonl", "validation", required=False)
        histories = None
        if args.movielens is not None:
            from dlsearch.data.movielens import load_movielens

            histories = load_movielens(args.movielens or None)
        res = b.build_dual(catalog, args.out, train, validation=load_conversations(vpath) if vpath else None, histories=histories,
                           config=b.load_dual_config(args.config, sets=args.set), factory=args.factory, params=params, cache_dir=args.cache_dir)
    return res
