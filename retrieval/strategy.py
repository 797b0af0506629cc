"""One strategy interface: conversations in, the shared search shape out, plus an error field per conversation.

    bm25 = SearcherStrategy("bm25", bm25_index, to_query=lambda c: conversation_text(c, catalog))
    res = bm25.search(conversations, k)        # StrategyResult
    scores, rows = res                          # [n, k] float32 / int64, best first, padded -inf / -1 (retrieval.shape)
    res.errors[i]                               # None, or why this strategy failed for conversation i

The router, evaluation, the sweep, the quickstart and the service all talk to strategies through `search(convs, k)`.
A searcher underneath keeps the faiss-like shape `search(queries, k) -> (scores, rows)` over its own query type
(text, concept lists, prompts, or the conversations themselves); `SearcherStrategy` is the one adapter from
conversations to that shape. A batch that raises is retried one conversation at a time, so one bad conversation
(a search API that chokes on one query, a prompt the model cannot take) degrades only its own answer.
`RankingMemo` lets two users of one searcher in one run (evaluation's own 'direct' system and the router's
'direct' strategy) share its rankings, so it searches each conversation once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from dlsearch.data.formats import Conversation
from dlsearch.retrieval.shape import PAD_ROW, check_k, empty_result

log = logging.getLogger(__name__)


@dataclass
class StrategyResult:
    """What a strategy returns for a batch of conversations. Unpacks as `scores, rows`."""

    scores: np.ndarray  # float32 [n, k], best first, -inf padding
    rows: np.ndarray  # int64 [n, k], catalog rows, -1 padding
    errors: list[str | None]  # [n]: None, or "<ExceptionType>: message" when the strategy failed for that conversation

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.scores
        yield self.rows

    @property
    def failed(self) -> list[int]:
        return [i for i, e in enumerate(self.errors) if e is not None]


@runtime_checkable
class Strategy(Protocol):
    """Anything the router and evaluation can run: a name, whether it masks exclusions itself, and `search`."""

    name: str
    masks_exclusions: bool

    def search(self, convs: Sequence[Conversation], k: int) -> StrategyResult: ...


def allow_list(conv: Conversation) -> list[str] | None:
    """The conversation's allow list (`conv.meta["allow"]`: recommend only among these ids), or None."""
    allow = conv.meta.get("allow")
    if allow is not None and (isinstance(allow, str) or not all(isinstance(x, str) for x in allow)):
        raise TypeError(f"conversation {conv.id}: meta['allow'] must be a list of item ids, got {type(allow).__name__}")
    return None if allow is None else list(allow)


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


@dataclass
class SearcherStrategy:
    """A searcher with the search shape, seen from conversations.

    `to_query(conv)` turns a conversation into the searcher's query (None: the conversation itself is the query).
    It may return None for a conversation it cannot serve (e.g. no concepts): that conversation gets padding, which
    is not an error. `masks_exclusions` (default: the searcher's own attribute) says the searcher never returns a
    conversation's excluded items, so callers need not over-fetch for them (direct search masks them in the trie)."""

    name: str
    searcher: Any
    to_query: Callable[[Conversation], Any] | None = None
    masks_exclusions: bool | None = None
    masks_allow: bool | None = None  # the searcher searches only among conv.meta["allow"] (router.allow_list)

    def __post_init__(self) -> None:
        if not callable(getattr(self.searcher, "search", self.searcher)):
            raise TypeError(f"strategy {self.name!r}: {type(self.searcher).__name__} is neither a function (queries, k) "
                            "nor has a search(queries, k) method")
        if self.masks_exclusions is None:
            self.masks_exclusions = bool(getattr(self.searcher, "masks_exclusions", False))
        if self.masks_allow is None:
            self.masks_allow = bool(getattr(self.searcher, "masks_allow", False))

    def search(self, convs: Sequence[Conversation], k: int) -> StrategyResult:
        k = check_k(k)
        scores, rows = empty_result(len(convs), k)
        errors: list[str | None] = [None] * len(convs)
        queries: list[Any] = []
        for i, conv in enumerate(convs):
            try:
                queries.append(conv if self.to_query is None else self.to_query(conv))
            except Exception as e:  # a conversation this strategy cannot read: its own failure only
                errors[i] = describe(e)
                queries.append(None)
        live = [i for i, q in enumerate(queries) if q is not None]
        if not live:
            return StrategyResult(scores, rows, errors)
        try:
            self._fill(live, queries, k, scores, rows)
        except Exception as e:
            if len(live) == 1:
                errors[live[0]] = describe(e)
            else:  # find the conversations that fail; the others still get this strategy's answer
                log.warning("strategy %s failed on a batch of %d (%s); retrying one conversation at a time", self.name, len(live), describe(e))
                for i in live:
                    try:
                        self._fill([i], queries, k, scores, rows)
                    except Exception as e1:
                        errors[i] = describe(e1)
        return StrategyResult(scores, rows, errors)

    def _fill(self, idx: list[int], queries: list[Any], k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        search = getattr(self.searcher, "search", self.searcher)  # an object with .search, or a function
        s, r = search([queries[i] for i in idx], k)
        s, r = np.asarray(s, dtype=np.float32), np.asarray(r, dtype=np.int64)
        if s.shape != (len(idx), k) or r.shape != (len(idx), k):
            raise ValueError(f"returned shapes {s.shape}/{r.shape}, expected {(len(idx), k)}")
        if np.isnan(s).any() or np.isposinf(s).any():
            raise ValueError("returned non-finite scores (NaN or +inf)")
        if (r < PAD_ROW).any():
            raise ValueError("returned negative catalog rows other than the -1 padding")
        scores[idx], rows[idx] = s, r


def conversation_key(conv: Conversation) -> str:
    """Everything a conversation holds, as one string: the memo key of a searcher that does not say what it reads."""
    return json.dumps(dataclasses.asdict(conv), sort_keys=True, default=str)


class RankingMemo:
    """A searcher over conversations that remembers each ranking it returned, for the length of one run, and, with a
    `store`, on disk, so that a run killed half-way resumes where it stopped.

        memo = RankingMemo(direct)               # direct: search(convs, k) -> (scores, rows)
        memo.search(convs, 100)                  # searches every conversation
        memo.search(linked_convs, 100)           # searches only those whose query changed (e.g. a linked mention)
        memo = RankingMemo(direct, store="out/rankings/direct.jsonl", identity=fingerprint, resume=True)

    The key is what the searcher reads, `searcher.query_key(conv)` (direct search: the prompt and the items it masks;
    default: the whole conversation), and k: a conversation whose query is unchanged gets the very arrays computed
    before, one that differs is searched. The conversations not yet seen go to the searcher as one batch; an
    exception propagates and nothing of that batch is remembered. Unbounded: scope it to one evaluation, not to a
    server. `computed` / `reused` count conversations (`stored`: those of them read back from the store).

    With a store, the conversations not yet seen go to the searcher in chunks of `chunk` (default: the searcher's own
    `batch_size`, so its batches are the ones it would have made) and each chunk is appended to the JSONL file as
    soon as it is ranked: one line per ranking, keyed by a SHA-256 of `identity` (what the searcher is: its
    factory, arguments, the files it loaded, the code) and the query key. `resume=False` empties the file first; with
    `resume=True` its rankings are reused bit for bit (dtypes kept) when identity and key match, and a last line cut
    off by a kill is ignored."""

    def __init__(self, searcher: Any, *, store: str | Path | None = None, identity: str = "", resume: bool = False,
                 chunk: int | None = None):
        if not callable(getattr(searcher, "search", None)):
            raise TypeError(f"RankingMemo needs a searcher with search(conversations, k), got {type(searcher).__name__}")
        self.searcher = searcher
        self.masks_exclusions = bool(getattr(searcher, "masks_exclusions", False))
        self.masks_allow = bool(getattr(searcher, "masks_allow", False))
        self._key = getattr(searcher, "query_key", conversation_key)
        self._seen: dict[tuple[Any, int], tuple[np.ndarray, np.ndarray]] = {}
        self.computed = self.reused = self.stored = 0
        self.store, self.identity = (Path(store) if store is not None else None), identity
        self.chunk = int(chunk or _batch_size(searcher) or 32)
        self._on_disk: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            if resume and self.store.is_file():
                self._on_disk = read_rankings(self.store)
                data = self.store.read_bytes()
                if data and not data.endswith(b"\n"):  # the line a kill cut off: dropped, or the next one joins it
                    with self.store.open("r+b") as f:
                        f.truncate(data.rfind(b"\n") + 1)
            else:
                self.store.write_text("", encoding="utf-8")

    def _digest(self, key: tuple[Any, int]) -> str:
        return hashlib.sha256(json.dumps([self.identity, key], default=repr).encode("utf-8")).hexdigest()

    def _compute(self, convs: Sequence[Conversation], keys: list[tuple[Any, int]], k: int) -> None:
        s, r = self.searcher.search(list(convs), k)
        s, r = np.asarray(s), np.asarray(r)  # dtypes kept: a reused ranking is the computed one, bit for bit
        if s.shape != (len(convs), k) or r.shape != (len(convs), k):
            raise ValueError(f"returned shapes {s.shape}/{r.shape}, expected {(len(convs), k)}")
        for j, key in enumerate(keys):
            self._seen[key] = (s[j], r[j])
        if self.store is not None:
            lines = [json.dumps({"key": self._digest(key), "scores": s[j].tolist(), "rows": r[j].tolist(),
                                 "dtypes": [str(s.dtype), str(r.dtype)]}) for j, key in enumerate(keys)]
            with self.store.open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        keys = [(self._key(c), k) for c in convs]
        todo: list[int] = []
        for i, key in enumerate(keys):
            if key in self._seen:
                continue
            hit = self._on_disk.pop(self._digest(key), None) if self._on_disk else None
            if hit is not None:  # ranked by an earlier run of this very searcher
                self._seen[key] = hit
                self.stored += 1
                continue
            todo.append(i)
        if todo:
            step = self.chunk if self.store is not None else len(todo)
            for lo in range(0, len(todo), step):
                part = todo[lo : lo + step]
                self._compute([convs[i] for i in part], [keys[i] for i in part], k)
        self.computed += len(todo)
        self.reused += len(convs) - len(todo)
        if not convs:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.stack([self._seen[key][0] for key in keys]), np.stack([self._seen[key][1] for key in keys])


def _batch_size(searcher: Any) -> int | None:
    """The batch size of the search engine under a searcher (DirectSearch.batch_size under the router's wrapper)."""
    for obj in (searcher, getattr(searcher, "search_engine", None), getattr(searcher, "searcher", None)):
        b = getattr(obj, "batch_size", None)
        if isinstance(b, int) and b > 0:
            return b
    return None


def read_rankings(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A RankingMemo store: digest -> (scores, rows). A last line cut off by a kill is ignored; a bad line elsewhere
    is an error naming the file and line (the file is not ours, or was edited)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
            out[d["key"]] = (np.asarray(d["scores"], dtype=d["dtypes"][0]), np.asarray(d["rows"], dtype=d["dtypes"][1]))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            if n == len(lines):
                log.warning("%s, line %d: cut off (a killed run); that ranking is computed again", path, n)
                continue
            raise ValueError(f"{path}, line {n}: not a stored ranking ({type(e).__name__}: {e}); delete the file "
                             "or run without --resume") from None
    return out


def as_strategy(name: str, obj: Any, *, to_query: Callable[[Conversation], Any] | None = None) -> Strategy:
    """`obj` itself when it already is a strategy (it declares `name` and `masks_exclusions` and returns a
    StrategyResult: a SearcherStrategy, the router), else `obj` (a searcher or a function) wrapped as one."""
    if isinstance(obj, Strategy):
        return obj
    return SearcherStrategy(name, obj, to_query)


def run_strategy(strategy: Any, convs: Sequence[Conversation], k: int) -> StrategyResult:
    """`strategy.search(convs, k)` as a StrategyResult, whether it returns one or a plain (scores, rows) pair
    (evaluation accepts both; a plain pair has no per-conversation errors)."""
    out = strategy.search(convs, k)
    if isinstance(out, StrategyResult):
        return out
    scores, rows = out
    return StrategyResult(np.asarray(scores, np.float32), np.asarray(rows, np.int64), [None] * len(convs))
