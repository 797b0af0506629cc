"""Embedded lexical search: BM25 (bm25s) over each item's title + concepts + text.

    index = build_bm25(catalog)               # ~0.3 s for all MovieLens + ReDial items (bench/bench_bm25.py)
    scores, rows = index.search(["space opera with robots"], k=10)
    index.save("runs/bm25"); BM25Index.load("runs/bm25", catalog)

The default `SearchAPI` engine (see `retrieval.search_api`) and the `bm25` strategy of the router.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

# bm25s sets its own logger to DEBUG at import, overriding the application's level: `recommend` printed its
# "Building index from IDs" lines. Its warnings still show.
logging.getLogger("bm25s").setLevel(logging.WARNING)

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.titles import titles_of
from dlsearch.retrieval.shape import check_k, check_result, empty_result
from dlsearch.data.encoder import item_text

MANIFEST = "manifest.json"
STOPWORDS = "en"  # English stopwords, dropped from items and queries alike
# Chat words dropped from queries only: conversations are chatty ("User: hi, I like movies like ..."), and these
# words otherwise match titles such as "I Like It Like That" or "Hi, Mom!" far above the movies the user named.
CHAT_STOPWORDS = frozenset(
    "user assistant hi hello hey like liked likes love loved movie movies film films watch watched watching seen see "
    "saw want looking look something recommend recommendation recommendations suggest suggestion suggestions good "
    "great really yes yeah thanks thank ok okay sure maybe also think know one ones lol kind type sounds heard enjoy "
    "enjoyed check bye goodbye well would could anything else definitely awesome nice cool fun day".split()
)


# A request's genre words outweigh a franchise word: when a query has two genre words (concepts of at least
# GENRE_MIN_ITEMS items, more often a concept than a title word), items whose title holds one of its series words (in
# the titles of FRANCHISE_MIN_TITLES items, more often a title word than a concept) take at most FRANCHISE_MAX_SHOWN
# places of a result list: "a good horror movie for Halloween, creepy and smart, not just gore" asks for horror, not
# for six films of the Halloween series. The word itself stays in the query: dropping it (the first version) cost
# requests that name a film by part of its title ("return of the dragon (Action, Drama)") 0.07 recall@10 on the
# MovieLens sweep's held-out requests (0.913 vs 0.983 at 1,000 items; tests/retrieval/test_bm25.py).
QUERY_STOPWORDS = ("chat", "none")  # configs: `query_stopwords: chat | none | [word, ...]`


def query_stopwords(setting: "str | Sequence[str]") -> frozenset[str]:
    """The words dropped from queries: "chat" (CHAT_STOPWORDS, written for movie conversations), "none", or a list
    of words (lowercased). A catalog whose products are named by a chat word ("watch", "film") wants its own list."""
    if isinstance(setting, str):
        if setting not in QUERY_STOPWORDS:
            raise ValueError(f"query_stopwords: must be one of {QUERY_STOPWORDS} or a list of words, got {setting!r}")
        return CHAT_STOPWORDS if setting == "chat" else frozenset()
    if not all(isinstance(w, str) for w in setting):
        raise ValueError(f"query_stopwords: a list of words must hold strings, got {list(setting)!r}")
    return frozenset(w.lower() for w in setting)


GENRE_MIN_ITEMS = 3
FRANCHISE_MIN_TITLES = 3
FRANCHISE_MAX_SHOWN = 2
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's / bm25s's default word pattern
_STOP = frozenset(STOPWORDS_EN)


def tokenize(texts: Sequence[str], *, drop: frozenset[str] = frozenset()) -> list[list[str]]:
    """Lowercased word tokens without English stopwords (and without `drop`). A plain regex pass: about twice as
    fast as bm25s.tokenize on the catalog, which matters for the < 2 s build goal on a loaded 2-core machine."""
    return [[w for w in _TOKEN_RE.findall(t.lower()) if w not in _STOP and w not in drop] for t in texts]


def _token_ids(docs: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in doc] for doc in docs], vocab


@dataclass
class BM25Params:
    k1: float = 1.5   # term-frequency saturation; higher rewards repeated words (long item texts)
    b: float = 0.75   # length normalisation; 0 ignores length, 1 divides fully by it
    method: str = "lucene"  # bm25s scoring variant: lucene | robertson | atire | bm25l | bm25+


class BM25Index:
    """A BM25 index over a catalog; rows of the result are catalog rows."""

    name = "bm25"

    def __init__(
        self, retriever: bm25s.BM25, catalog: Catalog, params: BM25Params, build_seconds: float = 0.0,
        query_stopwords: frozenset[str] = CHAT_STOPWORDS,
    ):
        self.retriever = retriever
        self.query_stopwords = query_stopwords
        self.catalog = catalog
        self.params = params
        self.build_seconds = build_seconds
        self._genre_words: frozenset[str] | None = None  # concept words of many items, built on first search
        self._franchise_words: frozenset[str] = frozenset()
        self._title_words: list[frozenset[str]] = []  # title words per catalog row, built with the genre words

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k catalog rows per query text. Items sharing no word with a query are not returned (padding).

        Args:
            queries: query texts (a conversation, a model-generated query, ...).
            k: results per query.
        Returns:
            (scores float32 [n, k], rows int64 [n, k]), best first, padded with -inf / -1.
        """
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not one string (wrap it in a list)")
        k = check_k(k)
        scores, rows = empty_result(len(queries), k)
        if not queries:
            return scores, rows
        titles = titles_of(self.catalog)
        tokens = tokenize(queries, drop=self.query_stopwords)
        capped = [self._series_words(t) for t in tokens]
        # fetch more than k: one member per duplicate group is kept (data/titles.py), series members may be capped
        kk = min((4 * k + 20) if any(capped) else (2 * k + 10), len(self.catalog))
        live = [i for i, t in enumerate(tokens) if any(w in self.retriever.vocab_dict for w in t)]
        docs = np.zeros((len(queries), kk), dtype=np.int64)
        sc = np.zeros((len(queries), kk), dtype=np.float32)  # queries without a known word: no match (padding)
        if live:
            d, s = self.retriever.retrieve([tokens[i] for i in live], k=kk, show_progress=False, n_threads=0)
            docs[live], sc[live] = np.asarray(d, dtype=np.int64), np.asarray(s, dtype=np.float32)
        for i, q in enumerate(queries):
            hit = sc[i] > 0  # bm25s returns score 0 for documents without a shared term: those are no match
            found = dict(zip(docs[i][hit].tolist(), sc[i][hit].tolist()))
            # a query that is exactly a title ("the matrix", "Matrix, The (1999)") gets that title first
            exact = titles.exact(q)
            top = max(found.values(), default=0.0)
            for n, r in enumerate(exact):
                found[r] = top + 1.0 + (len(exact) - n) * 1e-3 + found.get(r, 0.0) * 1e-6
            # order by (score desc, row asc): bm25s breaks ties arbitrarily, results must be reproducible
            ranked = sorted(found.items(), key=lambda rs: (-rs[1], rs[0]))
            keep = titles.keep([r for r, _ in ranked])
            if capped[i]:
                keep = self._cap_series([ranked[j][0] for j in keep], keep, capped[i])
            keep = keep[:k]
            scores[i, : len(keep)] = [ranked[j][1] for j in keep]
            rows[i, : len(keep)] = [ranked[j][0] for j in keep]
        check_result(scores, rows, len(queries), k)
        return scores, rows

    def _cap_series(self, rows: list[int], positions: list[int], words: frozenset[str]) -> list[int]:
        """positions (parallel to rows, best first) without the series members past the first FRANCHISE_MAX_SHOWN."""
        out, shown = [], 0
        for r, j in zip(rows, positions):
            if words & self._title_words[r]:
                shown += 1
                if shown > FRANCHISE_MAX_SHOWN:
                    continue
            out.append(j)
        return out

    def _series_words(self, tokens: list[str]) -> frozenset[str]:
        """The query's franchise words whose series is capped in the results: those of a query that has two genre
        words (see FRANCHISE_MIN_TITLES), else none."""
        if self._genre_words is None:
            genre: dict[str, int] = {}
            title: dict[str, int] = {}
            self._title_words = [frozenset(ws) for ws in tokenize([it.title for it in self.catalog])]  # per row
            for it, words in zip(self.catalog, self._title_words):
                for w in set(tokenize([" ".join(it.concepts)])[0]):
                    genre[w] = genre.get(w, 0) + 1
                for w in words:
                    title[w] = title.get(w, 0) + 1
            # a genre word is more often a concept than a title word ("horror": 469 concepts, 20 titles); a
            # franchise word the other way round ("halloween": 2 concepts, 12 titles)
            self._genre_words = frozenset(w for w, c in genre.items() if c >= max(GENRE_MIN_ITEMS, title.get(w, 0)))
            self._franchise_words = frozenset(w for w, c in title.items() if c >= FRANCHISE_MIN_TITLES) - self._genre_words
        if len({w for w in tokens if w in self._genre_words}) < 2:
            return frozenset()
        return frozenset(w for w in tokens if w in self._franchise_words)

    def save(self, out_dir: str | Path) -> Path:
        """Write the bm25s arrays (npy, no pickle) and a manifest naming the catalog they index."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(out), allow_pickle=False, show_progress=False)
        manifest = {
            "kind": "bm25",
            "catalog_hash": self.catalog.content_hash(),
            "n_items": len(self.catalog),
            "params": vars(self.params),
            "stopwords": STOPWORDS,
            "build_seconds": round(self.build_seconds, 3),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return out

    @classmethod
    def load(cls, index_dir: str | Path, catalog: Catalog) -> "BM25Index":
        """Load an index saved by `save`; refuses an index built for another catalog version."""
        d = Path(index_dir)
        if not (d / MANIFEST).exists():
            raise FileNotFoundError(f"{d}: no {MANIFEST}; build it with `dlsearch index build --kind bm25`")
        manifest = json.loads((d / MANIFEST).read_text())
        if manifest.get("kind") != "bm25":
            raise ValueError(f"{d / MANIFEST}: field 'kind' is {manifest.get('kind')!r}, expected 'bm25'")
        if manifest["catalog_hash"] != catalog.content_hash():
            raise ValueError(
                f"{d / MANIFEST}: built for catalog {manifest['catalog_hash'][:12]}, this catalog is "
                f"{catalog.content_hash()[:12]}; rebuild the index"
            )
        retriever = bm25s.BM25.load(str(d), allow_pickle=False, show_progress=False)
        return cls(retriever, catalog, BM25Params(**manifest["params"]))


def build_bm25(
    catalog: Catalog, params: BM25Params | None = None, *, text_fn: Callable[[Item], str] = item_text
) -> BM25Index:
    """Index every item's text (title + concepts + text by default).

    Args:
        catalog: the items; result rows are its rows.
        params: BM25 parameters (defaults: k1 1.5, b 0.75, lucene).
        text_fn: item -> text to index.
    """
    params = params or BM25Params()
    t0 = time.perf_counter()
    ids, vocab = _token_ids(tokenize([text_fn(it) for it in catalog]))
    retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
    retriever.index((ids, vocab), show_progress=False)
    return BM25Index(retriever, catalog, params, time.perf_counter() - t0)
