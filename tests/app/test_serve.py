"""`dlsearch serve` API on the catalog-only service (ReDial catalog, BM25 + mention linking) through a real uvicorn
server on 127.0.0.1: recommend / chat / OpenAI completions (streaming too) / items / health / metrics, 422s that
name the field, 413 beyond the body limit, a degraded strategy reported for the request it failed, and concurrent
requests answered by one recommend_many."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from dlsearch.app.search_server import ServerThread
from dlsearch.app.serve import ServerSettings, catalog_only_router, create_app, read_serve_config
from dlsearch.data.redial import load_redial
from dlsearch.data.titles import titles_of
from dlsearch.retrieval.bm25 import build_bm25
from dlsearch.retrieval.router import Router

MATRIX = "I loved The Matrix, something similar?"


@pytest.fixture(scope="module")
def catalog():
    return load_redial()[0]


@pytest.fixture(scope="module")
def client(catalog):
    with ServerThread(create_app(catalog_only_router(catalog), catalog, ServerSettings(max_body_bytes=20_000))) as url:
        with httpx.Client(base_url=url, timeout=120) as c:
            yield c


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_recommend_links_mentions_and_excludes_their_duplicate_group(client, catalog):
    out = client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 5}).json()
    matrix_group = set(titles_of(catalog).group("85036"))
    assert {"85036", "140395"} <= matrix_group
    assert [c["id"] for c in out["linked"]] == ["85036"] and out["degraded"] == {}
    ids = [c["id"] for c in out["items"]]
    assert ids and not set(ids) & matrix_group and all(i in catalog for i in ids)
    assert all(c["strategy"] == "bm25" and isinstance(c["score"], float) for c in out["items"])
    # deny: the denied item and its group are gone, the rest moves up
    again = client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 5, "deny": [ids[0]]}).json()
    assert ids[0] not in [c["id"] for c in again["items"]] and [c["id"] for c in again["items"]][: len(ids) - 1] == ids[1:]
    allowed = client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 5, "allow": ids[1:3]}).json()
    assert [c["id"] for c in allowed["items"]] == ids[1:3]


def test_allow_list_deeper_than_the_first_candidates_still_gets_k_items(client, catalog):
    """An allow list of items BM25 ranks 61st to 70th: the router ranks the whole catalog for it and returns k of them
    (it used to filter only the first k + 50 candidates: no item at all)."""
    from dlsearch.data.formats import Conversation, Message

    conv = Conversation("deep", [Message("user", MATRIX)], exclude=["85036"], meta={"linked": ["85036"]})  # as the service builds it
    ranked = [s.item_id for s in catalog_only_router(catalog).recommend(conv, k=80).items]
    assert len(ranked) == 80
    allow = ranked[60:70]
    out = client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 5, "allow": allow}).json()
    assert [c["id"] for c in out["items"]] == allow[:5]
    none = client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 5, "allow": ["no-such-id"]}).json()
    assert none["items"] == []


def test_chat_and_openai_completions(client):
    chat = client.post("/v1/chat", json={"messages": user(MATRIX), "k": 3}).json()
    assert chat["items"] and all(c["title"] in chat["reply"] for c in chat["items"]) and "The Matrix (1999)" in chat["reply"]
    done = client.post("/v1/chat/completions", json={"model": "x", "messages": user(MATRIX), "temperature": 0.2, "k": 3}).json()
    assert done["object"] == "chat.completion" and done["choices"][0]["message"]["content"] == chat["reply"]
    with client.stream("POST", "/v1/chat/completions", json={"messages": user(MATRIX), "stream": True, "k": 3}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == chat["reply"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["items"] == chat["items"]


def test_items_health_metrics(client):
    assert client.get("/v1/items", params={"q": "the matrix"}).json()["items"][0]["id"] == "85036"
    assert client.get("/health").json()["status"] == "ok"
    client.post("/v1/recommend", json={"messages": user(MATRIX), "k": 2})
    text = client.get("/metrics").text
    assert 'dlsearch_requests_total{route="/v1/recommend",status="200"}' in text
    assert 'dlsearch_request_seconds_bucket{le="0.005",route="/v1/recommend"}' in text
    assert 'dlsearch_items_total{strategy="bm25"}' in text and "dlsearch_batch_size_count" in text
    assert "<title>" in client.get("/").text


def test_bad_requests_name_the_field_and_big_bodies_are_413(client):
    r = client.post("/v1/recommend", json={"messages": user("x"), "k": 500})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "k"]
    r = client.post("/v1/recommend", json={"messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "messages", 0, "role"]
    r = client.post("/v1/recommend", json={"messages": user("x"), "dney": []})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dney"]
    r = client.post("/v1/recommend", json={"messages": user("y" * 30_000)})
    assert r.status_code == 413
    assert client.get("/v1/items", params={"q": ""}).status_code == 422


class Failing:
    """A strategy that fails for conversations mentioning 'boom' (stands in for a dead search API)."""

    def __init__(self, catalog):
        self.inner = build_bm25(catalog)

    def search(self, queries, k):
        if any("boom" in q for q in queries):
            raise RuntimeError("search API down")
        return self.inner.search(queries, k)


def test_concurrent_requests_are_micro_batched_and_degradation_is_per_request(catalog):
    router = Router(catalog, {"bm25": build_bm25(catalog), "flaky": Failing(catalog)})
    calls = []
    inner = router.recommend_many
    router.recommend_many = lambda convs, k: calls.append(len(convs)) or inner(convs, k)
    app = create_app(router, catalog, ServerSettings(max_batch=8, batch_wait_ms=200))

    async def burst(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            texts = ["boom, a heist film"] + [f"a funny heist film {i}" for i in range(7)]
            return await asyncio.gather(*[c.post("/v1/recommend", json={"messages": user(t), "k": 3}) for t in texts])

    with ServerThread(app) as url:
        rs = asyncio.run(burst(url))
        metrics = httpx.get(url + "/metrics").text
    outs = [r.json() for r in rs]
    assert calls == [8]  # eight concurrent requests, one recommend_many
    assert "flaky" in outs[0]["degraded"] and "search API down" in outs[0]["degraded"]["flaky"]
    assert all(o["degraded"] == {} for o in outs[1:]) and all(o["items"] for o in outs)
    assert 'dlsearch_degradations_total{strategy="flaky"} 1.0' in metrics


def test_serve_config_is_recommend_schema_plus_server(tmp_path):
    cfg, settings = read_serve_config("configs/serve.yaml")
    assert cfg["strategies"]["bm25"]["enabled"] and settings.host == "127.0.0.1"
    bad = tmp_path / "serve.yaml"
    bad.write_text(open("configs/serve.yaml").read().replace("max_batch:", "max_bacth:"))
    with pytest.raises(ValueError, match=r"unknown field .server\.max_bacth.; did you mean .max_batch."):
        read_serve_config(bad)
    bad.write_text(open("configs/serve.yaml").read().replace("  bm25:\n", "  bm26:\n"))
    with pytest.raises(ValueError, match="unknown field 'strategies.bm26'; did you mean 'bm25'"):
        read_serve_config(bad)


def test_policy_link_mentions_false_is_honoured_by_the_service(catalog):
    # regression: the service linked and excluded named titles whatever the config's policy.link_mentions said
    from dlsearch.retrieval.router import Policy

    router = Router(catalog, {"bm25": build_bm25(catalog)}, Policy(link_mentions=False))
    with ServerThread(create_app(router, catalog)) as url:
        out = httpx.post(url + "/v1/recommend", json={"messages": user(MATRIX), "k": 5}, timeout=60).json()
    assert out["linked"] == [] and set(titles_of(catalog).group("85036")) & {c["id"] for c in out["items"]}


def test_catalog_only_router_takes_the_shop_settings(tmp_path):
    # `serve --catalog` for a shop: linking off keeps a named product recommendable, no stopwords keeps "watch"
    from dlsearch.data.catalog import Catalog, Item

    shop = Catalog([Item("w1", "Steel diver watch", concepts=("watch",)), Item("s1", "Leather strap", concepts=("strap",)),
                    Item("b2", "Leather bag", concepts=("bag",))])
    with ServerThread(create_app(catalog_only_router(shop, link_mentions=False, query_stopwords="none"), shop)) as url:
        watch = httpx.post(url + "/v1/recommend", json={"messages": user("I want a watch for my dad"), "k": 3}, timeout=60).json()
        strap = httpx.post(url + "/v1/recommend", json={"messages": user("do you have a Leather strap?"), "k": 3}, timeout=60).json()
    assert watch["items"][0]["id"] == "w1" and strap["linked"] == [] and strap["items"][0]["id"] == "s1"
    with ServerThread(create_app(catalog_only_router(shop), shop)) as url:  # the movie defaults
        watch = httpx.post(url + "/v1/recommend", json={"messages": user("I want a watch for my dad"), "k": 3}, timeout=60).json()
        strap = httpx.post(url + "/v1/recommend", json={"messages": user("do you have a Leather strap?"), "k": 3}, timeout=60).json()
    assert "w1" not in [c["id"] for c in watch["items"]] and [c["id"] for c in strap["linked"]] == ["s1"]
