"""`serve-search` bounds: a query over max_query_chars or a body over max_body_bytes is a 413 answered at once, and
small queries keep being served."""

from __future__ import annotations

import time

import httpx

from dlsearch.app.search_server import ServerThread, create_app
from dlsearch.data.catalog import Catalog, Item
from dlsearch.retrieval.bm25 import build_bm25

CATALOG = Catalog([Item("1", "The Matrix (1999)", concepts=("sci-fi",)), Item("2", "Toy Story (1995)", concepts=("animation",)),
                   Item("3", "Heat (1995)", concepts=("crime",))])


def test_413_beyond_query_and_body_limits():
    app = create_app(build_bm25(CATALOG), CATALOG, max_body_bytes=2_000, max_query_chars=100)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        assert c.post("/search", json={"query": "matrix", "k": 2}).json()["hits"][0]["id"] == "1"
        r = c.post("/search", json={"query": "x" * 101, "k": 2})
        assert r.status_code == 413 and "max_query_chars" in r.json()["detail"]
        r = c.post("/_search", json={"size": 2, "query": {"match": {"title": "y " * 60}}})
        assert r.status_code == 413
        t0 = time.monotonic()
        r = c.post("/search", json={"query": "z" * 5_000_000, "k": 2})  # 5 MB: refused by Content-Length, unread
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"] and time.monotonic() - t0 < 2

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"query": "'
            for _ in range(100):
                yield b"w" * 100
            yield b'", "k": 2}'
        r = c.post("/search", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/search", json={"query": "toy story", "k": 1}).json()["hits"][0]["id"] == "2"
