"""`dlsearch serve --config` with direct search on a tiny random model (configs/serve.yaml with tiny overrides):
items come from the trie (strategy "direct"), the mentioned film's group is masked, concurrent requests share one
generate call."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml

from dlsearch.app.recommend import build_router
from dlsearch.app.search_server import ServerThread
from dlsearch.app.serve import create_app, read_serve_config
from dlsearch.data.redial import load_redial
from dlsearch.data.titles import titles_of

from decoding_fixtures import write_tiny_direct  # noqa: E402

N_ITEMS = 300  # ReDial items, The Matrix and its yearless duplicate included


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    full = load_redial()[0]
    ids = list(dict.fromkeys(["85036", "140395"] + [it.id for it in full][:N_ITEMS]))
    catalog = full.subset(ids)
    d = tmp_path_factory.mktemp("tiny")
    cfg = write_tiny_direct(d, catalog, beams=8)
    cfg["server"].update(max_batch=8, batch_wait_ms=300)
    (d / "serve.yaml").write_text(yaml.safe_dump(cfg))
    cfg, settings = read_serve_config(d / "serve.yaml")
    router = build_router(cfg)
    calls = []
    inner = router.strategies["direct"].searcher.search_engine.search
    router.strategies["direct"].searcher.search_engine.search = lambda prompts, k, **kw: calls.append(len(prompts)) or inner(prompts, k, **kw)
    with ServerThread(create_app(router, router.catalog, settings)) as url:
        yield url, router.catalog, calls


def test_direct_items_and_one_generate_call_for_concurrent_requests(served):
    url, catalog, calls = served
    group = set(titles_of(catalog).group("85036"))
    assert group == {"85036", "140395"}

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            body = {"messages": [{"role": "user", "content": "I loved The Matrix, something similar?"}], "k": 5}
            return await asyncio.gather(*[c.post("/v1/recommend", json=body) for _ in range(6)])

    outs = [r.json() for r in asyncio.run(burst())]
    assert calls == [6]  # six concurrent requests, one constrained beam search over six prompts
    for o in outs:
        ids = [c["id"] for c in o["items"]]
        assert len(ids) == 5 and all(c["strategy"] == "direct" for c in o["items"]) and not set(ids) & group
        assert o["linked"][0]["id"] == "85036" and o["degraded"] == {}
