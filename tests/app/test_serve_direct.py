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
        yield url, router.catalog, calls, router


def test_direct_items_and_one_generate_call_for_concurrent_requests(served):
    url, catalog, calls, _ = served
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


def test_allow_list_is_a_mask_in_the_trie(served):
    """Direct search masks the allow list in beam search: k items, every one allowed, even when none of them is among
    the unconstrained beams (the service used to filter the first k + 50 candidates)."""
    url, catalog, calls, _ = served
    body = {"messages": [{"role": "user", "content": "any good heist films?"}], "k": 5}
    free = httpx.post(url + "/v1/recommend", json=dict(body, k=50), timeout=120).json()
    top = {c["id"] for c in free["items"]}
    allow = [it.id for it in catalog if it.id not in top][-7:]
    out = httpx.post(url + "/v1/recommend", json=dict(body, allow=allow), timeout=120).json()
    ids = [c["id"] for c in out["items"]]
    assert len(ids) == 5 and set(ids) <= set(allow) and all(c["strategy"] == "direct" for c in out["items"])


class TwoSpans:
    """Stands in for a model trained to write <item> spans (the random model never opens one itself): opens a span at
    the first generated token, lets the model write two tokens of text after it closes, opens a second, then ends.
    The trie constraint, run after this processor, still decides every token inside a span."""

    def __init__(self, start: int, end: int, eos: int):
        self.start, self.end, self.eos = start, end, eos

    def __call__(self, input_ids, scores):
        for row, ids in enumerate(input_ids.tolist()):
            opened = ids.count(self.start)
            since = ids[::-1].index(self.end) if self.end in ids else None  # tokens written after the last close
            if opened == 0 or (opened == 1 and since == 2):
                scores[row, self.start] += 1000.0
            elif opened >= 2 and since == 0:
                scores[row, self.eos] += 1000.0
        return scores


def test_chat_in_span_mode_answers_with_the_models_reply_and_cards_from_its_spans(served, tmp_path):
    from dlsearch.app.serve import SpanReplier, span_replier, ServerSettings
    from dlsearch.data.ids import build_idmap
    from dlsearch.decoding.constraint import longest_code
    from dlsearch.decoding.index import build_index
    from dlsearch.decoding.spans import marker_ids

    url, catalog, calls, router = served
    engine = router.strategies["direct"].searcher.search_engine
    build_index(catalog, build_idmap(catalog, "title"), engine.tokenizer, mode="span").save(tmp_path / "span")
    settings = ServerSettings(span_index=str(tmp_path / "span"), reply_tokens=128)
    replier = span_replier({}, settings, router, catalog)  # the direct strategy's model, held once
    assert replier.model is engine.model and replier.max_new_tokens == 128 >= longest_code(replier.index) * 2 + 4
    start, end = marker_ids(engine.tokenizer)
    replier.logits_processor = [TwoSpans(start, end, engine.tokenizer.eos_token_id)]
    group = set(titles_of(catalog).group("85036"))
    with ServerThread(create_app(router, catalog, settings, replier)) as span_url:
        out = httpx.post(span_url + "/v1/chat", json={"messages": [{"role": "user", "content": "I loved The Matrix, something similar?"}],
                                                      "k": 5}, timeout=120).json()
        completion = httpx.post(span_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                                timeout=120).json()
    assert out["reply_mode"] == "span" and 1 <= len(out["items"]) <= 2
    assert all(c["strategy"] == "span" and c["id"] in catalog and c["id"] not in group for c in out["items"])
    assert all(c["title"].strip() in out["reply"] for c in out["items"]) and "<item>" not in out["reply"]
    assert out["linked"][0]["id"] == "85036"
    assert completion["items"] and completion["choices"][0]["message"]["content"]
    # a whole-mode index is refused by name; no span_index = template replies
    with pytest.raises(ValueError, match="span-mode trie"):
        SpanReplier(engine.model, engine.tokenizer, engine.index, catalog)
    assert span_replier({}, ServerSettings(), router, catalog) is None
    assert httpx.post(url + "/v1/chat", json={"messages": [{"role": "user", "content": "a heist film"}], "k": 3},
                      timeout=120).json()["reply_mode"] == "template"
