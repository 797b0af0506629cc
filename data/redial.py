"""ReDial: the movie list as a catalog and the dialogues as conversations.

    from dlsearch.data.redial import load_redial
    catalog, dialogues = load_redial()   # 6,924 movies, 1,342 dialogues (the bundled test split)

Items: id = ReDial movieId, title kept exactly as written (normalization is only used for matching),
meta: nbMentions, the linked MovieLens id(s), cold_start reasons. ReDial movies gain concepts (MovieLens genres and
tags) by title + year linking (data/linking.py); unlinked items are kept with meta["linked"] = False.

Dialogues: messages with role "user" for the initiator (seeker) and "assistant" for the respondent (recommender);
`@<movieId>` mentions kept in the text. ReDial's per-movie labels (respondentQuestions / initiatorQuestions:
suggested, seen, liked) stay in meta; they are never used as targets.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from dlsearch.data.catalog import Catalog, CatalogError, Item, read_jsonl
from dlsearch.data.formats import Conversation, Message, mention_ids
from dlsearch.data.linking import link_by_title
from dlsearch.data.movielens import load_movielens

DEFAULT_ROOT = Path(__file__).resolve().parent / "datasets" / "redial"
MOVIES_FILE = "movies_with_mentions.csv"
DIALOGUES_FILE = "test_data.jsonl"


def load_redial_movies(root: str | Path | None = None) -> Catalog:
    """movies_with_mentions.csv as a catalog without concepts (see load_redial for the linked one)."""
    path = (Path(root) if root is not None else DEFAULT_ROOT) / MOVIES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    items, rows = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("movieId", "movieName", "nbMentions") if c not in (reader.fieldnames or [])]
        if missing:
            raise CatalogError(f"missing column(s) {missing}", path=str(path), line=1, field=missing[0])
        for n, r in enumerate(reader, start=1):
            if not r["movieName"].strip():
                raise CatalogError("empty or whitespace-only value", path=str(path), line=n, field="movieName", unit="row")
            items.append(Item(id=r["movieId"], title=r["movieName"], meta={"nbMentions": int(r["nbMentions"] or 0)}))
            rows.append(n)
    return Catalog(items, source=str(path), lines=rows, unit="row")


def link_to_movielens(movies: Catalog, movielens: Catalog) -> Catalog:
    """Give ReDial items the concepts of their MovieLens match; flag unlinked and concept-less items."""
    links = link_by_title(movies, movielens)
    items = []
    for it in movies:
        ml_ids = links.get(it.id, [])
        concepts: dict[str, None] = {}
        for m in ml_ids:
            concepts.update(dict.fromkeys(movielens[m].concepts))
        meta = {**it.meta, "linked": bool(ml_ids), "movielens_ids": ml_ids,
                "cold_start": [] if concepts else ["no_concepts"]}
        items.append(Item(id=it.id, title=it.title, text=it.text, concepts=tuple(concepts), meta=meta))
    return Catalog(items, source=movies.source)


def movielens_histories_on(catalog: Catalog, movielens_root: str | Path | None = None, *, min_events: int = 3) -> dict[str, list[tuple[str, int]]]:
    """MovieLens rating histories moved onto a catalog linked to MovieLens (its items' meta["movielens_ids"], written
    by link_to_movielens): a rating of a linked MovieLens movie becomes an event on the catalog item (the first in
    catalog order where two items link to one movie); ratings of unlinked movies are dropped, and so are users left
    with fewer than `min_events` events. The users are MovieLens's, never ReDial's: nothing of a ReDial split leaks.

    On the bundled data: 75,053 of 100,836 ratings, all 610 users, over 3,751 linked MovieLens movies."""
    to_item: dict[str, str] = {}
    for it in catalog:
        for m in (it.meta or {}).get("movielens_ids") or []:
            to_item.setdefault(str(m), it.id)
    if not to_item:
        raise ValueError("histories 'movielens': no catalog item is linked to MovieLens (meta['movielens_ids'] is empty "
                         "everywhere); only the bundled ReDial catalog carries these links")
    _, ratings = load_movielens(movielens_root)
    out = {}
    for user, events in ratings.items():
        kept = [(to_item[m], t) for m, t in events if m in to_item]
        if len(kept) >= min_events:
            out[f"ml:{user}"] = kept
    return out


def _dialogue(rec: Any, *, path: str, line: int, catalog: Catalog) -> Conversation:
    for key in ("conversationId", "messages", "initiatorWorkerId", "respondentWorkerId"):
        if key not in rec:
            raise CatalogError("missing required field", path=path, line=line, field=key)
    initiator, respondent = rec["initiatorWorkerId"], rec["respondentWorkerId"]
    messages, message_ids = [], []
    for i, m in enumerate(rec["messages"]):
        sender = m.get("senderWorkerId")
        if sender not in (initiator, respondent):
            raise CatalogError(f"sender {sender!r} is neither initiator nor respondent", path=path, line=line, field=f"messages[{i}]")
        for mid in mention_ids(m["text"]):
            if mid not in catalog:
                raise CatalogError(f"mention @{mid} is not in {MOVIES_FILE}", path=path, line=line, field=f"messages[{i}]")
        messages.append(Message("user" if sender == initiator else "assistant", m["text"]))
        message_ids.append(m.get("messageId"))
    meta = {
        "source": "redial",
        "initiatorWorkerId": initiator,
        "respondentWorkerId": respondent,
        "respondentQuestions": rec.get("respondentQuestions") or {},
        "initiatorQuestions": rec.get("initiatorQuestions") or {},
        "messageIds": message_ids,
    }
    return Conversation(id=str(rec["conversationId"]), messages=messages, meta=meta)


def load_dialogues(catalog: Catalog, root: str | Path | None = None) -> list[Conversation]:
    """test_data.jsonl as whole-dialogue conversations (one per ReDial conversationId)."""
    path = (Path(root) if root is not None else DEFAULT_ROOT) / DIALOGUES_FILE
    out, seen = [], {}
    for n, rec in read_jsonl(path):
        conv = _dialogue(rec, path=str(path), line=n, catalog=catalog)
        if conv.id in seen:
            raise CatalogError(f"duplicate conversationId {conv.id!r} (first at line {seen[conv.id]})", path=str(path), line=n, field="conversationId")
        seen[conv.id] = n
        out.append(conv)
    return out


def load_redial(root: str | Path | None = None, *, movielens_root: str | Path | None = None,
                link: bool = True) -> tuple[Catalog, list[Conversation]]:
    """Load ReDial from `root` (default: the bundled copy), linked to MovieLens (default: bundled) for concepts.

    Returns:
        (catalog, dialogues) — see the module docstring.
    Raises:
        FileNotFoundError; CatalogError naming file, line/row and field for malformed input.
    """
    movies = load_redial_movies(root)
    catalog = link_to_movielens(movies, load_movielens(movielens_root)[0]) if link else movies
    return catalog, load_dialogues(catalog, root)
