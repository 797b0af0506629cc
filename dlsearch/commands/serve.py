"""`dlsearch serve`: the recommender over HTTP with a chat page at /.

    dlsearch serve --config configs/serve.yaml            # model, indexes and router held once
    dlsearch serve --catalog runs/redial/catalog.jsonl    # no model: BM25 + mention linking (a first look)
    dlsearch serve --catalog shop.jsonl --set policy.link_mentions=false --set strategies.bm25.query_stopwords=none
    dlsearch serve --config configs/serve.yaml --set k=20 --set server.max_batch=32
"""

from __future__ import annotations

import argparse

from dlsearch.commands import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn) with a chat page at /")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="configs/serve.yaml (recommend.yaml's schema plus a server: section)")
    src.add_argument("--catalog", help="catalog JSONL: serve BM25 + mention linking only, no model")
    p.add_argument("--host", default=None, help="bind address (default server.host, 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=None, help="port (default server.port, 8000)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. k=20 or server.max_batch=32 (with --catalog: server.*, "
                        "policy.link_mentions and strategies.bm25.query_stopwords only)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from dlsearch.app.serve import catalog_only_router, read_serve_config, serve, server_settings, span_replier
    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.data.config import ConfigError, apply_overrides

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.config:
        from dlsearch.app.recommend import build_router

        cfg, settings = read_serve_config(args.config, {"server": server}, sets=args.set)
        catalog = load_catalog_jsonl(cfg["catalog"])
        router = build_router(cfg, catalog)
        replier = span_replier(cfg, settings, router, catalog)  # None: template replies
    else:
        tree = apply_overrides({"server": {}}, args.set)
        policy, bm25 = tree.pop("policy", None) or {}, (tree.pop("strategies", None) or {}).get("bm25") or {}
        stray = sorted(set(tree) - {"server"}) + [f"policy.{k}" for k in policy if k != "link_mentions"] + [
            f"strategies.bm25.{k}" for k in bm25 if k != "query_stopwords"]
        if stray:
            raise ConfigError(f"--set {', '.join(stray)}: without --config only server.*, policy.link_mentions and "
                              "strategies.bm25.query_stopwords can be set (the rest is recommend.yaml's schema; use "
                              "--config configs/serve.yaml)")
        settings = server_settings({**(tree["server"] or {}), **server}, "dlsearch serve --catalog")
        link = policy.get("link_mentions", True)
        if not isinstance(link, bool):
            raise ConfigError(f"--set policy.link_mentions: expected true or false, got {link!r}")
        try:
            from dlsearch.retrieval.bm25 import query_stopwords

            words = bm25.get("query_stopwords", "chat")
            query_stopwords(words)
        except ValueError as e:
            raise ConfigError(f"--set strategies.bm25.{e}") from None
        catalog = load_catalog_jsonl(args.catalog)
        router, replier = catalog_only_router(catalog, link_mentions=link, query_stopwords=words), None
    serve(router, catalog, settings, replier)
    return 0
