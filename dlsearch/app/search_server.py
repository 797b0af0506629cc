"""`dlsearch serve-search`: the embedded search engine (BM25 by default) over HTTP (FastAPI + uvicorn).

    dlsearch serve-search --catalog runs/redial/catalog.jsonl --host 127.0.0.1 --port 8000

Routes:
    GET  /health                     {"status": "ok", "n_items": ..., "catalog_hash": ...}
    POST /search                     {"query": str, "k": int} -> {"hits": [{"id", "score", "title"}]}
    POST /_search, /{index}/_search  Elasticsearch-style body {"size": k, "query": {"multi_match"|"match"|
                                     "query_string": ...}} -> {"hits": {"total": {"value": n}, "hits":
                                     [{"_id", "_score", "_source": {"title"}}]}}
so `HTTPSearchAPI` works against it with either preset.

Bounds: a request body over `max_body_bytes` or a query over `max_query_chars` is answered 413 (Payload Too Large)
before any search runs, so one huge request cannot slow every other one (a 100 MB query took 51 s at 2.5 GB).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import Body, FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from dlsearch.data.catalog import Catalog
from dlsearch.retrieval.search_api import SearchAPI


MAX_BODY_BYTES = 64 << 10  # a search request is a query and a k: 64 KiB is generous
MAX_QUERY_CHARS = 4_096  # longer than any conversation the router renders into a query (it keeps the last turns)


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing passes it on as a 413 (not a 400)."""


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, by Content-Length when declared, else counted as it
    streams in (the app never sees more than `max_bytes`)."""

    def __init__(self, app: Any, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send: Any) -> None:
        await JSONResponse({"detail": f"request body exceeds {self.max_bytes} bytes (max_body_bytes)"}, status_code=413)(
            {"type": "http"}, None, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen, started = 0, False

        async def counted_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(413, f"request body exceeds {self.max_bytes} bytes (max_body_bytes)")
            return msg

        async def tracked_send(msg: Any) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._reject(send)


def check_query_length(query: str, max_chars: int) -> None:
    if len(query) > max_chars:
        raise HTTPException(413, f"query has {len(query)} characters; the limit is {max_chars} (max_query_chars)")


class SearchRequest(BaseModel):
    query: str
    k: int = Field(10, ge=1, le=10_000)


def _es_query_text(body: dict[str, Any]) -> str:
    """The query text of an Elasticsearch-style body: multi_match / match / query_string."""
    q = body.get("query")
    if not isinstance(q, dict):
        raise HTTPException(400, "body.query must be an object, e.g. {'multi_match': {'query': '...'}}")
    if "multi_match" in q and isinstance(q["multi_match"], dict) and isinstance(q["multi_match"].get("query"), str):
        return q["multi_match"]["query"]
    if "query_string" in q and isinstance(q["query_string"], dict) and isinstance(q["query_string"].get("query"), str):
        return q["query_string"]["query"]
    if "match" in q and isinstance(q["match"], dict) and len(q["match"]) == 1:
        v = next(iter(q["match"].values()))
        v = v.get("query") if isinstance(v, dict) else v
        if isinstance(v, str):
            return v
    raise HTTPException(400, "unsupported query: use multi_match, match or query_string with a text 'query'")


def create_app(engine: SearchAPI, catalog: Catalog, *, max_body_bytes: int = MAX_BODY_BYTES,
               max_query_chars: int = MAX_QUERY_CHARS) -> FastAPI:
    """A FastAPI app answering searches with `engine` (rows mapped to `catalog` ids); 413 beyond the bounds."""
    app = FastAPI(title="dlsearch search API")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    catalog_hash = catalog.content_hash()

    def run(query: str, k: int) -> list[tuple[str, float, str]]:
        check_query_length(query, max_query_chars)
        scores, rows = engine.search([query], k)
        return [(catalog.items[int(r)].id, float(s), catalog.items[int(r)].title) for s, r in zip(scores[0], rows[0]) if r >= 0]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.name, "n_items": len(catalog), "catalog_hash": catalog_hash}

    @app.post("/search")
    def search(req: SearchRequest) -> dict[str, Any]:
        return {"hits": [{"id": i, "score": s, "title": t} for i, s, t in run(req.query, req.k)]}

    def es_search(body: dict[str, Any]) -> dict[str, Any]:
        size = body.get("size", 10)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 10_000:
            raise HTTPException(400, "size must be an int in [1, 10000]")
        hits = run(_es_query_text(body), size)
        return {
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": hits[0][1] if hits else None,
                "hits": [{"_id": i, "_score": s, "_source": {"title": t}} for i, s, t in hits],
            }
        }

    @app.post("/_search")
    def es_search_root(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return es_search(body)

    @app.post("/{index}/_search")
    def es_search_index(index: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return es_search(body)

    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks); `with ServerThread(app) as url:`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 20.0):
        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"search server on {self.url} did not start within {self.startup_timeout} s")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(engine: SearchAPI, catalog: Catalog, host: str = "127.0.0.1", port: int = 8000, **limits: int) -> None:
    """Blocking: serve until interrupted. `limits`: max_body_bytes, max_query_chars (see create_app)."""
    uvicorn.run(create_app(engine, catalog, **limits), host=host, port=port, log_level="info")
