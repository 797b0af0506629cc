"""The HTTP adapter against the real served engine on loopback: success (both presets), timeout, 500, bad JSON."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.responses import PlainTextResponse, JSONResponse

from dlsearch.retrieval.bm25 import build_bm25
from dlsearch.retrieval.search_api import (
    HTTPSearchAPI, SearchAPI, SearchHTTPError, SearchResponseError, SearchTimeout, SearchUnavailable, search_items,
)
from dlsearch.app.search_server import ServerThread, create_app, free_port


@pytest.fixture(scope="module")
def served(ml_catalog):
    engine = build_bm25(ml_catalog)
    app = create_app(engine, ml_catalog)
    calls = {"broken": 0}

    # Fault routes added to the real app, so timeouts / 500 / malformed JSON are produced by a real server.
    @app.post("/slow/search")
    def slow(body: dict) -> dict:
        time.sleep(1.0)
        return {"hits": []}

    @app.post("/broken/search")
    def broken(body: dict) -> JSONResponse:
        calls["broken"] += 1
        return JSONResponse({"detail": "index shard failed"}, status_code=500)

    @app.post("/garbage/search")
    def garbage(body: dict) -> PlainTextResponse:
        return PlainTextResponse("<html>not json</html>", status_code=200)

    @app.post("/shapeless/search")
    def shapeless(body: dict) -> dict:
        return {"results": [{"id": "1"}]}

    with ServerThread(app) as url:
        yield url, engine, calls


def test_adapter_matches_embedded_engine(served, ml_catalog):
    url, engine, _ = served
    api = HTTPSearchAPI(ml_catalog, url, preset="dlsearch")
    assert isinstance(api, SearchAPI) and isinstance(engine, SearchAPI)
    queries = ["toy story", "crime thriller heist", "zzqxv"]
    s_http, r_http = api.search(queries, 5)
    s_emb, r_emb = engine.search(queries, 5)
    np.testing.assert_array_equal(r_http, r_emb)
    np.testing.assert_allclose(s_http, s_emb, rtol=1e-6)
    assert (r_http[2] == -1).all()
    items = search_items(api, "jumanji", 3, ml_catalog)
    assert ml_catalog[items[0].item_id].title.startswith("Jumanji")
    assert items[0].strategy == "search_api" and items[0].rank == 1


def test_elasticsearch_preset(served, ml_catalog):
    url, engine, _ = served
    api = HTTPSearchAPI(ml_catalog, url + "/movies", preset="elasticsearch")
    _, rows = api.search(["jumanji"], 3)
    assert ml_catalog.items[rows[0, 0]].title.startswith("Jumanji")


def test_timeout_is_one_deadline_for_the_exchange_retries_included(served, ml_catalog):
    url, _, _ = served
    api = HTTPSearchAPI(ml_catalog, url + "/slow", timeout=0.3, retries=3, backoff=0.0)
    t0 = time.monotonic()
    with pytest.raises(SearchTimeout, match=r"timeout on all 1 attempt.*one deadline of 0.3 s"):
        api.search(["toy story"], 3)
    assert time.monotonic() - t0 < 0.6


def test_http_500_retried_then_reported_with_status(served, ml_catalog):
    url, _, calls = served
    api = HTTPSearchAPI(ml_catalog, url + "/broken", retries=2, backoff=0.0)
    before = calls["broken"]
    with pytest.raises(SearchHTTPError, match="HTTP 500") as e:
        api.search(["toy story"], 3)
    assert e.value.status == 500 and calls["broken"] - before == 3


def test_malformed_json_and_missing_fields(served, ml_catalog):
    url, _, _ = served
    with pytest.raises(SearchResponseError, match="not valid JSON"):
        HTTPSearchAPI(ml_catalog, url + "/garbage").search(["x"], 3)
    with pytest.raises(SearchResponseError, match="hits path 'hits' not found"):
        HTTPSearchAPI(ml_catalog, url + "/shapeless").search(["x"], 3)


def test_client_error_not_retried_and_server_down(served, ml_catalog):
    url, _, _ = served
    with pytest.raises(SearchHTTPError, match="HTTP 404"):
        HTTPSearchAPI(ml_catalog, url + "/nowhere").search(["x"], 3)
    down = HTTPSearchAPI(ml_catalog, f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.0)
    with pytest.raises(SearchUnavailable, match="connection failed"):
        down.search(["x"], 3)


def test_bad_configuration_is_a_value_error(ml_catalog):
    with pytest.raises(ValueError, match="unknown search API preset"):
        HTTPSearchAPI(ml_catalog, "http://x", preset="solr")
    with pytest.raises(ValueError, match="http://"):
        HTTPSearchAPI(ml_catalog, "localhost:9200")


def test_custom_mapping(served, ml_catalog):
    from dlsearch.retrieval.search_api import HTTPMapping

    url, _, _ = served
    mapping = HTTPMapping(path="/movies/_search", body={"size": "{k}", "query": {"match": {"title": {"query": "{query}"}}}},
                          hits_path="hits.hits", id_field="_id", score_field="_score")
    _, rows = HTTPSearchAPI(ml_catalog, url, mapping=mapping).search(["jumanji"], 2)
    assert ml_catalog.items[rows[0, 0]].title.startswith("Jumanji")
