"""Search-API lookup: any engine that maps a query text to scored items, embedded or over HTTP.

    api: SearchAPI = build_bm25(catalog)                                  # embedded default
    api = HTTPSearchAPI(catalog, "http://127.0.0.1:8000", preset="dlsearch")
    api = HTTPSearchAPI(catalog, "http://es:9200/movies", preset="elasticsearch")
    scores, rows = api.search(["a funny heist movie"], k=10)              # the search shape

The HTTP adapter maps the query into a request body (a JSON template whose string values "{query}" and "{k}" are
replaced), reads hits from a dotted path in the response, and maps each hit's id to a catalog row (hits for ids
the catalog does not have are dropped: the remote index may be newer than the catalog; so are hits with a NaN or
infinite score; both are counted in `api.dropped` and logged, and a response whose every hit was dropped is a
`SearchResponseError`). Failures raise a `SearchAPIError` subclass that says what failed — `SearchTimeout`,
`SearchUnavailable` (connection refused), `SearchHTTPError` (status >= 400, with the status and the start of the
body), `SearchResponseError` (not JSON, hits/ids/scores missing, or larger than `max_response_bytes`) — after
bounded retries for the transient kinds (timeout, connection, 5xx).

`timeout` is ONE deadline for the whole exchange of one query — connect, send, every read of the body, and the
retries: a server that drips a byte a second cannot hold a conversation past it (httpx's own timeouts are per
read, so each read is given only the time left; see `_read_capped`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import httpx
import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import ScoredItem
from dlsearch.retrieval.shape import check_k, check_result, topk_from_lists

log = logging.getLogger(__name__)


@runtime_checkable
class SearchAPI(Protocol):
    """query texts, k -> (scores float32 [n, k], catalog rows int64 [n, k]) padded with -inf / -1."""

    name: str

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


def search_items(api: SearchAPI, query: str, k: int, catalog: Catalog) -> list[ScoredItem]:
    """One query -> scored items (item id, score, rank, strategy=api.name); the edge form of `api.search`."""
    scores, rows = api.search([query], k)
    out = []
    for s, r in zip(scores[0], rows[0]):
        if r >= 0:
            out.append(ScoredItem(catalog.items[int(r)].id, float(s), len(out) + 1, api.name))
    return out


class SearchAPIError(RuntimeError):
    """A search API call failed; the message names the endpoint, what failed and after how many attempts."""


class SearchTimeout(SearchAPIError):
    pass


class SearchUnavailable(SearchAPIError):
    pass


class SearchHTTPError(SearchAPIError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class SearchResponseError(SearchAPIError):
    """The server answered 2xx but the body is not JSON or lacks the mapped fields."""


@dataclass(frozen=True)
class HTTPMapping:
    """How a query becomes a request and a response becomes hits.

    path: appended to the endpoint (e.g. "/search", "/_search").
    body: JSON template; any string value exactly "{query}" or "{k}" is replaced by the query / k (k as int).
    hits_path: dotted path to the list of hits in the response ("hits.hits" for Elasticsearch).
    id_field / score_field: dotted paths inside one hit ("_id", "_score", or e.g. "_source.item_id").
    """

    path: str = "/search"
    method: str = "POST"
    body: dict[str, Any] = field(default_factory=lambda: {"query": "{query}", "k": "{k}"})
    hits_path: str = "hits"
    id_field: str = "id"
    score_field: str = "score"


PRESETS: dict[str, HTTPMapping] = {
    # `dlsearch serve-search` native route
    "dlsearch": HTTPMapping(),
    # Elasticsearch / OpenSearch `_search` with a multi_match over the item text fields
    "elasticsearch": HTTPMapping(
        path="/_search",
        body={"size": "{k}", "query": {"multi_match": {"query": "{query}", "fields": ["title^2", "concepts", "text"]}}},
        hits_path="hits.hits",
        id_field="_id",
        score_field="_score",
    ),
}


def _fill(template: Any, query: str, k: int) -> Any:
    if isinstance(template, dict):
        return {key: _fill(v, query, k) for key, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, query, k) for v in template]
    if template == "{query}":
        return query
    if template == "{k}":
        return k
    return copy.copy(template)


def _get(obj: Any, dotted: str, what: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(f"{what} path '{dotted}' not found (missing '{part}')")
        obj = obj[part]
    return obj


class HTTPSearchAPI:
    """A search engine behind HTTP, adapted to the search shape.

    Args:
        catalog: maps hit ids to catalog rows.
        endpoint: base URL, e.g. "http://127.0.0.1:8000" or "http://es:9200/movies".
        preset: a name in PRESETS, or None to use `mapping`.
        mapping: explicit request/response mapping (overrides preset).
        timeout: seconds for the whole exchange of one query: connect, send, the full body, and all retries.
        retries: extra attempts after a connection error or 5xx while time is left (0 = one attempt).
        max_response_bytes: a larger response body is refused (SearchResponseError) without reading the rest.
        backoff: seconds before retry i is backoff * 2**i.
        name: strategy name carried by results.
    """

    def __init__(
        self,
        catalog: Catalog,
        endpoint: str,
        *,
        preset: str | None = "dlsearch",
        mapping: HTTPMapping | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.1,
        name: str = "search_api",
        client: httpx.Client | None = None,
        max_response_bytes: int = 8 << 20,
    ):
        if mapping is None:
            if preset not in PRESETS:
                raise ValueError(f"unknown search API preset {preset!r}; choose one of {sorted(PRESETS)} or pass mapping")
            mapping = PRESETS[preset]
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"search API endpoint must start with http:// or https://, got {endpoint!r}")
        if timeout <= 0 or retries < 0 or max_response_bytes <= 0:
            raise ValueError(f"need timeout > 0, retries >= 0 and max_response_bytes > 0, got timeout={timeout}, "
                             f"retries={retries}, max_response_bytes={max_response_bytes}")
        self.catalog, self.mapping, self.name = catalog, mapping, name
        self.url = endpoint.rstrip("/") + mapping.path
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_response_bytes = max_response_bytes
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout))
        self.dropped = {"unknown_ids": 0, "nonfinite_scores": 0}  # hits dropped since construction (reported, never fatal)

    def close(self) -> None:
        self.client.close()

    def _read_capped(self, resp: httpx.Response, deadline: float) -> bytes:
        """The body, read chunk by chunk: each read may wait only the time left before `deadline` (httpcore reads
        the read timeout from the request's extensions at every read), and reading stops past the size cap."""
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise SearchResponseError(f"search API {self.url}: response of {int(declared)} bytes exceeds max_response_bytes "
                                      f"{self.max_response_bytes}")
        buf = bytearray()
        timeouts = resp.request.extensions.setdefault("timeout", {})
        timeouts["read"] = max(1e-3, deadline - time.monotonic())
        for chunk in resp.iter_bytes():  # decoded bytes: a compressed body cannot blow past the cap
            buf += chunk
            if len(buf) > self.max_response_bytes:
                raise SearchResponseError(f"search API {self.url}: response exceeds max_response_bytes {self.max_response_bytes}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise httpx.ReadTimeout("deadline passed while reading the body")
            timeouts["read"] = left
        return bytes(buf)

    def _request(self, query: str, k: int) -> Any:
        body = _fill(self.mapping.body, query, k)
        deadline = time.monotonic() + self.timeout
        attempts, attempt, last = self.retries + 1, 0, ""
        while attempt < attempts:
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
            left = deadline - time.monotonic()
            if left <= 0:
                last = last or "timeout"
                break
            attempt += 1
            try:
                with self.client.stream(self.mapping.method, self.url, json=body, timeout=httpx.Timeout(left)) as resp:
                    status = resp.status_code
                    raw = self._read_capped(resp, deadline)
            except httpx.TimeoutException as e:
                last = "timeout"
                log.warning("search API %s: deadline %.2f s passed (attempt %d): %s", self.url, self.timeout, attempt, type(e).__name__)
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__}: {e})"
                log.warning("search API %s: %s (attempt %d/%d)", self.url, last, attempt, attempts)
                continue
            text = raw[:200].decode("utf-8", "replace")
            if status >= 500:
                last = f"HTTP {status}: {text!r}"
                log.warning("search API %s: %s (attempt %d/%d)", self.url, last, attempt, attempts)
                continue
            if status >= 400:  # a client error does not go away by retrying
                raise SearchHTTPError(f"search API {self.url}: HTTP {status}: {text!r}", status)
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SearchResponseError(
                    f"search API {self.url}: response is not valid JSON ({e}); body starts {text[:120]!r}"
                ) from None
        msg = f"search API {self.url}: {last} on all {attempt} attempt(s)"
        if last == "timeout":
            raise SearchTimeout(msg + f" (one deadline of {self.timeout} s for the exchange)")
        if last.startswith("HTTP"):
            raise SearchHTTPError(msg, int(last.split()[1].rstrip(":")))
        raise SearchUnavailable(msg)

    def _hits(self, payload: Any) -> list[tuple[int, float]]:
        m = self.mapping
        try:
            hits = _get(payload, m.hits_path, "hits")
            if not isinstance(hits, list):
                raise KeyError(f"hits path '{m.hits_path}' is a {type(hits).__name__}, expected a list")
            out, seen, unknown, nonfinite = [], set(), 0, 0
            for h in hits:
                item_id = str(_get(h, m.id_field, "id"))
                score = float(_get(h, m.score_field, "score"))
                if item_id not in self.catalog:
                    unknown += 1
                    continue
                if not math.isfinite(score):
                    nonfinite += 1
                    continue
                row = self.catalog.index(item_id)
                if row not in seen:
                    seen.add(row)
                    out.append((row, score))
        except (KeyError, TypeError, ValueError) as e:
            raise SearchResponseError(f"search API {self.url}: malformed response: {e}") from None
        self.dropped["unknown_ids"] += unknown
        self.dropped["nonfinite_scores"] += nonfinite
        if unknown or nonfinite:
            what = f"{unknown} hit(s) whose ids are not in the catalog, {nonfinite} with a NaN or infinite score"
            log.warning("search API %s: dropped %s", self.url, what)
            if not out:  # nothing usable: this is a failure of the service, reported on the conversation's line
                raise SearchResponseError(f"search API {self.url}: every hit dropped ({what})")
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """One request per query; raises SearchAPIError (subclass says what failed) if any query fails."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not one string (wrap it in a list)")
        k = check_k(k)
        scores, rows = topk_from_lists([self._hits(self._request(q, k)) for q in queries], k)
        check_result(scores, rows, len(queries), k)
        return scores, rows
