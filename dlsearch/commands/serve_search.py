"""`dlsearch serve-search`: serve the embedded BM25 engine over HTTP.

    dlsearch serve-search --catalog runs/redial/catalog.jsonl --port 8000 [--index runs/redial/index/bm25]
"""

from __future__ import annotations

import argparse

from dlsearch.commands import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-search", help="serve the embedded BM25 search engine over HTTP (FastAPI + uvicorn)")
    p.add_argument("--catalog", required=True, help="catalog JSONL the engine searches")
    p.add_argument("--index", default=None, help="a saved BM25 index dir (default: build in memory, < 2 s)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--max-body-bytes", type=positive_int, default=None, help="413 for a larger request body (default 64 KiB)")
    p.add_argument("--max-query-chars", type=positive_int, default=None, help="413 for a longer query (default 4096)")
    p.set_defaults(func=cmd_serve_search)


def cmd_serve_search(args: argparse.Namespace) -> int:
    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.retrieval.bm25 import BM25Index, build_bm25
    from dlsearch.app.search_server import serve

    catalog = load_catalog_jsonl(args.catalog)
    engine = BM25Index.load(args.index, catalog) if args.index else build_bm25(catalog)
    limits = {k: v for k, v in (("max_body_bytes", args.max_body_bytes), ("max_query_chars", args.max_query_chars)) if v is not None}
    serve(engine, catalog, host=args.host, port=args.port, **limits)
    return 0
