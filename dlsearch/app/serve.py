"""`dlsearch serve`: the recommender as an HTTP service with a chat page (FastAPI + uvicorn).

    dlsearch serve --config configs/serve.yaml                 # the router of recommend.yaml, held once
    dlsearch serve --catalog runs/redial/catalog.jsonl         # no model: BM25 + mention linking (first look, tests)

Routes:
    GET  /                       the chat page (chat.html, package data; plain HTML + JS)
    POST /v1/recommend           {messages, k, allow, deny} -> {items: [{id, title, year, concepts, score, strategy}],
                                 degraded: {strategy: reason} for THIS request, linked: [ids found in the text]}
    POST /v1/chat                same body -> {reply, reply_mode, items, degraded, linked}: with server.span_index
                                 (span mode) the model's reply, each item in it a span constrained to the catalog,
                                 the cards built from those spans; else (or when the reply names no item) a template
                                 naming the router's items
    POST /v1/chat/completions    OpenAI-compatible (stream: true -> SSE chunks, then `data: [DONE]`); items ride
                                 along in an extra `items` field
    GET  /v1/items?q=            title lookup (exact normalized title, year optional, then edit distance)
    GET  /health, GET /metrics   liveness; Prometheus text (requests, latency, strategy use, degradations)

Concurrent requests are micro-batched: `Batcher` collects requests for `batch_wait_ms` (up to `max_batch`) and
runs ONE `router.recommend_many` in a worker thread, so a model answers them in one generate call. A request's
`degraded` comes from its own Prediction: a strategy failing for another request in the batch does not show.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dlsearch.app.search_server import BodyLimit
from dlsearch.data.catalog import Catalog, split_title_year
from dlsearch.data.formats import Conversation, Message, Prediction
from dlsearch.data.titles import titles_of


@dataclass
class ServerSettings:
    """The `server:` section of configs/serve.yaml (every field commented there)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 256 << 10
    max_k: int = 50
    max_messages: int = 64
    max_message_chars: int = 4_000
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    threads: int | None = None
    access_log: bool = False
    span_index: str | None = None
    reply_tokens: int = 64

    def __post_init__(self) -> None:  # "field: why": the validator puts the dotted path (server.max_k) in front
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads: must be >= 1 or null, got {self.threads}")
        for name in ("max_body_bytes", "max_k", "max_messages", "max_message_chars", "max_batch", "reply_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms: must be >= 0, got {self.batch_wait_ms}")


def read_serve_config(path: str | Path, overrides: dict[str, Any] | None = None, *,
                      sets: Sequence[str] = ()) -> tuple[dict[str, Any], ServerSettings]:
    """configs/serve.yaml = recommend.yaml's schema (validated by the same reader) plus a `server:` section, with
    `sets` (`a.b=c`, the --set syntax of every verb, `server.port=9000` too) applied to the file, then `overrides`
    (top-level keys; `server` a mapping of server keys, e.g. the --host/--port flags)."""
    import yaml

    from dlsearch.app.recommend import _check, check_config, resolve_config_paths
    from dlsearch.data.config import apply_overrides

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such config file")
    tree = yaml.safe_load(p.read_text()) or {}
    if isinstance(tree, dict):
        apply_overrides(tree, sets)
    raw = _check(tree, {"server"} | _recommend_keys(), str(p))
    overrides = dict(overrides or {})
    server = raw.pop("server", None) or {}
    if isinstance(server, dict):
        server = {**server, **(overrides.pop("server", None) or {})}
    return resolve_config_paths(check_config({**raw, **overrides}, str(p)), p), server_settings(server, str(p))


def server_settings(tree: Any, where: str) -> ServerSettings:
    """The `server:` section, validated by the shared config validator (types, ranges, unknown keys by name)."""
    from dlsearch.data.config import ConfigError, from_dict

    try:
        return from_dict(ServerSettings, tree, "server")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _recommend_keys() -> set[str]:
    from dlsearch.app.recommend import TOP_KEYS

    return set(TOP_KEYS)


def catalog_only_router(catalog: Catalog, *, link_mentions: bool = True, query_stopwords: str | list[str] = "chat") -> Any:
    """No model: BM25 over the catalog. Its query is the conversation text plus the concepts of the items the user
    mentioned (conv.meta["linked"], set by the service's mention linking): "I loved The Matrix" then finds
    sci-fi action films, not only titles containing "matrix". link_mentions and query_stopwords are recommend.yaml's
    policy.link_mentions and strategies.bm25.query_stopwords (a shop wants false and none: docs/own-data.md)."""
    from dlsearch.retrieval.build import load_bm25
    from dlsearch.retrieval.embedding import conversation_text
    from dlsearch.retrieval.router import Policy, Router
    from dlsearch.retrieval.strategy import SearcherStrategy

    def query(conv: Conversation) -> str:
        liked = [" ".join(catalog[i].concepts) for i in conv.meta.get("linked", []) if i in catalog]
        return " ".join([conversation_text(conv, catalog)] + liked)

    index = load_bm25(None, catalog, query_stopwords=query_stopwords)  # the router's own BM25 build and stopwords
    return Router(catalog, {"bm25": SearcherStrategy("bm25", index, query)}, Policy(link_mentions=link_mentions))


# -- mention linking -----------------------------------------------------------------------------------------------
def link_mentions(text: str, catalog: Catalog) -> list[str]:
    """Catalog items named in free text, one id per work, in order: retrieval/mentions.py's linker (titles with or
    without year, typos, common-word titles such as "It" or "Up" only with a cue; figures in docs/retrieval.md)."""
    from dlsearch.retrieval.mentions import linker_for

    return list(dict.fromkeys(m.item_id for m in linker_for(catalog).find(text)))


# -- span-mode replies --------------------------------------------------------------------------------------------
def reply_prompt(conv: Conversation, catalog: Catalog, tokenizer: Any) -> str:
    """The model's next assistant turn: the messages through the tokenizer's chat template (mentions written as
    titles), or, for a tokenizer without one, data.prompts' 'User: ... / Assistant: ...' lines and 'Assistant:'."""
    from dlsearch.data.formats import render_mentions
    from dlsearch.data.prompts import item_text_in_prompt, render_conversation

    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": m.role, "content": render_mentions(m.content, lambda i: item_text_in_prompt(i, catalog))}
                for m in conv.messages]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return render_conversation(conv, catalog) + "\nAssistant:"


@dataclass
class SpanReplier:
    """The model writes the reply; every item in it is a span constrained to the catalog (decoding.spans), and the
    items it names become the reply's cards. Excluded items (mentioned, denied) and their duplicate groups are
    masked in the spans. `logits_processor`: extra processors before the constraint (e.g. a repetition penalty)."""

    model: Any
    tokenizer: Any
    index: Any  # a span-mode TrieIndex built with this tokenizer over this catalog
    catalog: Catalog
    max_new_tokens: int = 64
    logits_processor: Sequence[Any] = ()

    def __post_init__(self) -> None:
        from dlsearch.decoding.spans import marker_ids

        if self.index.mode != "span":
            raise ValueError("server.span_index must be a span-mode trie (dlsearch index build --kind trie --mode span)")
        marker_ids(self.tokenizer)  # ValueError when the tokenizer cannot write <item> ... </item>

    def reply_many(self, convs: Sequence[Conversation], k: int = 0) -> list[Any]:
        from dlsearch.decoding.spans import generate_with_items

        titles = titles_of(self.catalog)
        deny = [sorted(titles.excluded_ids(c.exclusions())) for c in convs]
        prompts = [reply_prompt(c, self.catalog, self.tokenizer) for c in convs]
        return generate_with_items(self.model, self.tokenizer, self.index, prompts, max_new_tokens=self.max_new_tokens,
                                   deny=deny, logits_processor=list(self.logits_processor), do_sample=False)


def span_replier(cfg: dict[str, Any], settings: ServerSettings, router: Any, catalog: Catalog) -> SpanReplier | None:
    """The span replier of a serve config: None without `server.span_index` (template replies). The model is the
    direct strategy's (held once), else cfg["model_dir"] loaded here."""
    if not settings.span_index:
        return None
    from dlsearch.decoding.index import TrieIndex

    engine = getattr(getattr(getattr(router, "strategies", {}).get("direct"), "searcher", None), "search_engine", None)
    if engine is not None:
        model, tokenizer = engine.model, engine.tokenizer
    elif cfg.get("model_dir"):
        from dlsearch.finetune.loading import load_model

        model, tokenizer, _ = load_model(cfg["model_dir"], catalog=catalog)
    else:
        raise ValueError("server.span_index needs a model: set model_dir (or enable the direct strategy)")
    if not Path(settings.span_index).exists():
        raise FileNotFoundError(f"{settings.span_index}: no span index (server.span_index); build it with "
                                "`dlsearch index build --kind trie --mode span`")
    index = TrieIndex.load(settings.span_index, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    return SpanReplier(model, tokenizer, index, catalog, max_new_tokens=int(settings.reply_tokens))


# -- request and response bodies -----------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=4_000)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    k: int = Field(10, ge=1, le=50)
    allow: list[str] | None = Field(None, max_length=10_000, description="recommend only among these ids")
    deny: list[str] = Field(default_factory=list, max_length=10_000, description="never recommend these (nor their duplicates)")


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send temperature, top_p, ...: accepted, not used
    model: str = "dlsearch"
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    stream: bool = False
    k: int = Field(5, ge=1, le=50)
    deny: list[str] = Field(default_factory=list, max_length=10_000)


# -- micro-batching ------------------------------------------------------------------------------------------------
class Batcher:
    """Collects concurrent requests for `wait_s` (up to `max_batch`) and answers them with one `recommend_many` in a
    worker thread. One batch runs at a time: the model is not shared between threads."""

    def __init__(self, router: Any, max_batch: int, wait_s: float, on_batch: Any = None, *,
                 run: Any = None, lock: threading.Lock | None = None):
        self.router, self.max_batch, self.wait_s, self.on_batch = router, max_batch, wait_s, on_batch
        self.run = run  # (convs, k) -> one answer per conversation; default router.recommend_many
        self.lock = lock or threading.Lock()  # shared by batchers of one model: one batch on the model at a time
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, conv: Conversation, k: int) -> Prediction:
        if self.queue is None:  # created on the serving loop, on first use
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((conv, k, fut))
        return await fut

    async def _loop(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            convs, kmax = [b[0] for b in batch], max(b[1] for b in batch)
            try:
                preds = await asyncio.to_thread(self._run, convs, kmax)
            except Exception as e:  # the router never raises for a strategy; anything else fails these requests only
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            for (_, k, fut), p in zip(batch, preds):
                if not fut.done():
                    fut.set_result(Prediction(p.id, p.items[:k], p.degraded) if isinstance(p, Prediction) else p)

    def _run(self, convs: list[Conversation], k: int) -> list[Any]:
        with self.lock:
            if self.run is not None:
                return self.run(convs, k)
            preds = self.router.recommend_many(convs, k)
            self.router.decisions.clear()  # a service runs forever: the per-batch log must not grow
            return preds


# -- the app -------------------------------------------------------------------------------------------------------
ROUTES = frozenset({"/", "/health", "/metrics", "/v1/recommend", "/v1/chat", "/v1/chat/completions", "/v1/items"})


class RequestMetrics:
    """ASGI middleware counting requests by route and status and observing latency. A plain ASGI wrapper, not
    Starlette's BaseHTTPMiddleware (`@app.middleware("http")`): that one runs every request through an extra task
    and memory streams, and its cost per request does not batch (bench/bench_serve.py, docs/serve.md)."""

    def __init__(self, app: Any, requests: Any, latency: Any):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = scope.get("path") if scope["type"] == "http" else None
        if route not in ROUTES:
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def send_status(msg: Any) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.requests.labels(route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - t0)


def _metrics() -> tuple[Any, dict[str, Any]]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()  # one per app: two apps in one process (tests) do not share counters
    return reg, {
        "requests": Counter("dlsearch_requests", "HTTP requests", ["route", "status"], registry=reg),
        "latency": Histogram("dlsearch_request_seconds", "request latency", ["route"], registry=reg,
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
        "strategy": Counter("dlsearch_items", "recommended items by the strategy that produced them", ["strategy"], registry=reg),
        "degraded": Counter("dlsearch_degradations", "requests a strategy failed for", ["strategy"], registry=reg),
        "batch": Histogram("dlsearch_batch_size", "requests per recommend_many call", registry=reg,
                           buckets=(1, 2, 4, 8, 16, 32, 64)),
    }


def item_card(catalog: Catalog, item_id: str, score: float | None = None, strategy: str | None = None) -> dict[str, Any]:
    it = catalog[item_id]
    _, year = split_title_year(it.title)
    out: dict[str, Any] = {"id": it.id, "title": it.title, "year": year, "concepts": list(it.concepts[:6])}
    if score is not None:
        out.update(score=score, strategy=strategy)
    return out


def reply_text(cards: Sequence[dict[str, Any]], linked: Sequence[dict[str, Any]]) -> str:
    """The template reply: without span mode (server.span_index), or when the model's reply named no item."""
    if not cards:
        return "I could not find anything for that yet. Tell me something you liked, or what you are looking for."
    names = [c["title"] for c in cards]
    lead = f"Since you mentioned {', '.join(c['title'] for c in linked[:3])}, you" if linked else "You"
    return f"{lead} might like {', '.join(names[:-1]) + ' and ' if len(names) > 1 else ''}{names[-1]}."


def create_app(router: Any, catalog: Catalog, settings: ServerSettings | None = None,
               replier: SpanReplier | None = None) -> FastAPI:
    """The service. With a `replier` (span mode), /v1/chat and /v1/chat/completions answer with the model's own reply,
    its items constrained to the catalog; without one, with the template naming the router's items."""
    settings = settings or ServerSettings()
    app = FastAPI(title="dlsearch recommender")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    registry, m = _metrics()
    app.add_middleware(RequestMetrics, requests=m["requests"], latency=m["latency"])  # outermost: 413s are counted too
    batcher = Batcher(router, settings.max_batch, settings.batch_wait_ms / 1000, on_batch=m["batch"].observe)
    page = resources.files("dlsearch.app").joinpath("chat.html").read_text(encoding="utf-8")
    app.state.batcher = batcher
    replies = None if replier is None else Batcher(router, settings.max_batch, settings.batch_wait_ms / 1000,
                                                   run=replier.reply_many, lock=batcher.lock)
    lock = threading.Lock()
    # the router's policy.link_mentions: false (a shop, where naming an item asks for it) turns the linking off here too
    link = getattr(getattr(router, "policy", None), "link_mentions", True)

    def check_limits(messages: list[ChatMessage], k: int) -> None:
        from fastapi import HTTPException

        if k > settings.max_k:
            raise HTTPException(422, f"body.k: {k} exceeds server.max_k {settings.max_k}")
        if len(messages) > settings.max_messages:
            raise HTTPException(422, f"body.messages: {len(messages)} messages exceed server.max_messages {settings.max_messages}")
        for i, msg in enumerate(messages):
            if len(msg.content) > settings.max_message_chars:
                raise HTTPException(422, f"body.messages[{i}].content: {len(msg.content)} characters exceed server.max_message_chars "
                                         f"{settings.max_message_chars}")

    def conversation(messages: list[ChatMessage], k: int, deny: list[str], allow: list[str] | None) -> Conversation:
        check_limits(messages, k)
        msgs = [Message("assistant" if x.role == "assistant" else "user", x.content) for x in messages if x.content.strip()]
        user_text = "\n".join(x.content for x in msgs if x.role == "user")
        linked = link_mentions(user_text, catalog) if link else []
        exclude = list(dict.fromkeys(linked + [i for i in deny if i in catalog]))
        meta: dict[str, Any] = {"linked": linked}
        if allow is not None:  # the router searches among these (retrieval.strategy.allow_list)
            meta["allow"] = list(allow)
        return Conversation(f"req-{uuid.uuid4().hex[:12]}", msgs or [Message("user", "")], exclude=exclude, meta=meta)

    async def recommend(messages: list[ChatMessage], k: int, deny: list[str], allow: list[str] | None,
                        conv: Conversation | None = None) -> dict[str, Any]:
        conv = conv or conversation(messages, k, deny, allow)
        linked = conv.meta["linked"]
        pred = await batcher.submit(conv, k)
        cards = [item_card(catalog, s.item_id, s.score, s.strategy) for s in pred.items[:k]]
        with lock:
            for c in cards:
                for name in c["strategy"].split("+"):
                    m["strategy"].labels(name).inc()
            for name in pred.degraded:
                m["degraded"].labels(name).inc()
        return {"items": cards, "degraded": dict(pred.degraded), "linked": [item_card(catalog, i) for i in linked]}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "n_items": len(catalog), "strategies": list(getattr(router, "strategies", {}))}

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/items")
    def items(q: str = Query(..., min_length=1, max_length=300), k: int = Query(10, ge=1, le=50)) -> dict[str, Any]:
        hits = titles_of(catalog).lookup(q)[:k]
        return {"items": [dict(item_card(catalog, i), distance=d) for i, d in hits]}

    @app.post("/v1/recommend")
    async def v1_recommend(req: RecommendRequest) -> dict[str, Any]:
        return await recommend(req.messages, req.k, req.deny, req.allow)

    async def chat(messages: list[ChatMessage], k: int, deny: list[str], allow: list[str] | None) -> dict[str, Any]:
        """Span mode: the model's reply, its spans' items (not excluded, not denied, allowed, one per duplicate group,
        at most k) as the cards; the template over the router's items without span mode or when the reply names
        no item."""
        conv = conversation(messages, k, deny, allow)
        if replies is not None:
            reply = await replies.submit(conv, k)
            titles, allowed = titles_of(catalog), None if allow is None else set(allow)
            excluded = titles.excluded_rows(conv.exclude)
            keep = titles.keep([catalog.index(it.item_id) for it in reply.items], excluded)  # one per group
            items = [reply.items[j] for j in keep if allowed is None or reply.items[j].item_id in allowed][:k]
            if items:  # the reply as a person reads it: each span written as the item's title
                text = reply.texts[0] + "".join(catalog[it.item_id].title.strip() + t
                                                for it, t in zip(reply.items, reply.texts[1:]))
                cards = [item_card(catalog, it.item_id, it.score, "span") for it in items]
                with lock:
                    m["strategy"].labels("span").inc(len(cards))
                return {"reply": text.strip(), "reply_mode": "span", "items": cards, "degraded": {},
                        "linked": [item_card(catalog, i) for i in conv.meta["linked"]]}
        out = await recommend(messages, k, deny, allow, conv)
        return {"reply": reply_text(out["items"], out["linked"]), "reply_mode": "template", **out}

    @app.post("/v1/chat")
    async def v1_chat(req: RecommendRequest) -> dict[str, Any]:
        return await chat(req.messages, req.k, req.deny, req.allow)

    @app.post("/v1/chat/completions")
    async def v1_completions(req: CompletionRequest) -> Any:
        out = await chat(req.messages, req.k, req.deny, None)
        text, rid, created = out["reply"], f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time())
        if not req.stream:
            return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    "items": out["items"], "degraded": out["degraded"]}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(body)}\n\n"

        def events() -> Any:
            yield chunk({"role": "assistant", "content": ""})
            words = text.split(" ")
            for i, w in enumerate(words):
                yield chunk({"content": w + (" " if i < len(words) - 1 else "")})
            yield chunk({}, "stop", items=out["items"], degraded=out["degraded"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve(router: Any, catalog: Catalog, settings: ServerSettings, replier: SpanReplier | None = None) -> None:
    """Blocking: serve until interrupted."""
    import uvicorn

    if settings.threads:
        import torch

        torch.set_num_threads(int(settings.threads))

    uvicorn.run(create_app(router, catalog, settings, replier), host=settings.host, port=settings.port, log_level="info",
                access_log=bool(settings.access_log))


__all__ = ["create_app", "serve", "Batcher", "ServerSettings", "read_serve_config", "catalog_only_router", "link_mentions",
           "SpanReplier", "span_replier", "reply_prompt"]
