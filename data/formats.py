"""Conversation and prediction files: the formats every command reads and writes.

conversations JSONL:
    {"id": "d1:t3", "messages": [{"role": "user", "content": "I loved @111776"}, ...],
     "exclude": ["111776"], "targets": ["151656"]}
  `role` is "user" or "assistant"; items inside `content` are written `@[<item_id>]` (any printable id, e.g.
  `@[B0-7XK]`) or, for ids of word characters joined by single `-` `.` `:` `/`, `@<item_id>` (ReDial's `@111776`;
  `@tt-0111` is the id `tt-0111`, never `tt`).
  `exclude` (items not to recommend, e.g. already mentioned) and `targets` (gold items) are optional; so is
  `split` ("train" | "validation" | "test"; "dev" and "valid" accepted), read by `prepare --split keep`.

predictions JSONL:
    {"id": "d1:t3", "items": [{"item_id": "151656", "score": -0.12, "rank": 1, "strategy": "direct"}, ...]}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from dlsearch.data.catalog import Catalog, CatalogError, check_item_id, read_jsonl, write_jsonl

ROLES = ("user", "assistant")
SPLIT_NAMES = {"train": "train", "validation": "validation", "dev": "validation", "valid": "validation", "test": "test"}


def split_name(value: Any, *, path: str | None = None, line: int | None = None, field: str = "split", unit: str = "line") -> str:
    """A dataset's own split label -> train | validation | test (dev, valid accepted, any case)."""
    key = str(value).strip().lower() if isinstance(value, str) else None
    if key not in SPLIT_NAMES:
        raise CatalogError(f"split {value!r} is not one of train, validation (dev, valid), test", path=path, line=line, unit=unit, field=field)
    return SPLIT_NAMES[key]
# Two forms of a mention: @[any printable id] and the bare @id (word characters joined by single -.:/ so that
# "@tt-0111" is the id "tt-0111", not "tt" followed by text; a trailing "." or "-" ends the mention). Inside the
# brackets a backslash escapes "[", "]" and itself, so an id such as "x]1" is written @[x\]1]. An "@" right after a
# letter or digit is no mention ("bob@example.com"), and "\@" writes an "@" that names no item (a handle: "\@bob").
MENTION_RE = re.compile(r"(?<![\w\\])@\[((?:\\[\[\]\\]|[^\[\]\x00-\x1f\x7f])+)\]|(?<![\w\\])@(\w+(?:[-.:/]\w+)*)")
_LITERAL_AT = re.compile(r"\\@")
_BARE_ID_RE = re.compile(r"\w+(?:[-.:/]\w+)*")
_ESCAPED = re.compile(r"\\([\[\]\\])")


def _mention_id(bracketed: str, bare: str) -> str:
    return _ESCAPED.sub(r"\1", bracketed) if bracketed else bare


def mention_ids(text: str) -> list[str]:
    """Item ids mentioned in text, in order (repeats kept), from both mention forms."""
    return [_mention_id(a, b) for a, b in MENTION_RE.findall(text)]


def format_mention(item_id: str) -> str:
    """How to write a mention of item_id in a message: @id when the bare form reads it back whole, else @[id]
    with "[", "]" and "\\" escaped by a backslash."""
    if _BARE_ID_RE.fullmatch(item_id):
        return f"@{item_id}"
    return "@[" + re.sub(r"([\[\]\\])", r"\\\1", item_id) + "]"


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass
class Conversation:
    id: str
    messages: list[Message]
    exclude: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "messages": [{"role": m.role, "content": m.content} for m in self.messages]}
        if self.exclude:
            out["exclude"] = list(self.exclude)
        if self.targets:
            out["targets"] = list(self.targets)
        if self.meta:
            out["meta"] = self.meta
        return out

    def exclusions(self, *, mentioned: bool = True) -> list[str]:
        """The items not to recommend back: `exclude`, then (by default) the items mentioned as @<id>, each once in
        that order. The one formula decoding, retrieval and evaluation use (it was written out four times)."""
        return list(dict.fromkeys(list(self.exclude) + (self.mentioned() if mentioned else [])))

    def mentioned(self) -> list[str]:
        """Item ids written as @<id> anywhere in the messages, in order of first mention."""
        seen: dict[str, None] = {}
        for m in self.messages:
            for mid in mention_ids(m.content):
                seen.setdefault(mid, None)
        return list(seen)


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    rank: int
    strategy: str


@dataclass
class Prediction:
    id: str
    items: list[ScoredItem]
    degraded: dict[str, str] = field(default_factory=dict)  # strategy -> why it failed for this conversation

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "items": [vars(s) for s in self.items]}
        if self.degraded:
            out["degraded"] = dict(self.degraded)
        return out


def unknown_mention(item_id: str) -> str:
    """The error text for a mention of an id the catalog does not have, with the two ways to write what was meant."""
    return (f"mention {format_mention(item_id)} is not a catalog item (write ids with other characters than letters, "
            f"digits and _ as @[id]; an @ that names no item, such as a handle, as \\{format_mention(item_id)})")


def render_mentions(text: str, render: Callable[[str], str | None]) -> str:
    """Replace every mention in text by render(item_id) (e.g. the title, or the id's text form); a mention that
    render answers None for (an unknown id) stays as written; an escaped "\\@" reads as "@". Prompts use
    data.prompts.render_conversation."""

    def sub(m: re.Match) -> str:
        out = render(_mention_id(m.group(1), m.group(2)))
        return m.group(0) if out is None else out

    return _LITERAL_AT.sub("@", MENTION_RE.sub(sub, text))


def conversation_from_record(rec: Any, *, path: str | None = None, line: int | None = None) -> Conversation:
    if not isinstance(rec, dict):
        raise CatalogError(f"expected a JSON object, got {type(rec).__name__}", path=path, line=line)
    allowed = {"id", "messages", "exclude", "targets", "meta", "split"}
    unknown = sorted(set(rec) - allowed)
    if unknown:
        raise CatalogError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}", path=path, line=line, field=unknown[0])
    cid = rec.get("id")
    if not isinstance(cid, (str, int)) or isinstance(cid, bool) or not str(cid).strip():
        raise CatalogError("missing or empty id", path=path, line=line, field="id")
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise CatalogError("expected a non-empty list of messages", path=path, line=line, field="messages")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            if not isinstance(m, dict):
                got = f"got a {type(m).__name__}"
            elif m.get("role") not in ROLES:
                got = f"got role {m.get('role')!r}"
            else:
                got = f"got content of type {type(m.get('content')).__name__}"
            hint = ("; a system prompt is not part of the conversation recommended from: move it to the record's "
                    "\"meta\" or drop it") if isinstance(m, dict) and m.get("role") == "system" else ""
            raise CatalogError(f"message {i} must be {{'role': 'user'|'assistant', 'content': str}}, {got}{hint}",
                               path=path, line=line, field=f"messages[{i}]")
        messages.append(Message(m["role"], m["content"]))
    lists = {}
    for name in ("exclude", "targets"):
        v = rec.get(name) or []
        if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            raise CatalogError("expected a list of item ids", path=path, line=line, field=name)
        lists[name] = [check_item_id(str(x), path=path, line=line, field=name) for x in v]
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise CatalogError("expected an object", path=path, line=line, field="meta")
    if rec.get("split") is not None:
        meta = {**meta, "split": split_name(rec["split"], path=path, line=line)}
    return Conversation(str(cid), messages, lists["exclude"], lists["targets"], meta)


def check_conversation_items(conv: Conversation, catalog: Catalog, *, path: str | None = None, line: int | None = None) -> None:
    """Every target, exclude and mention of conv is a catalog item, else a CatalogError naming file, line and field."""
    for name in ("targets", "exclude"):
        for item_id in getattr(conv, name):
            if item_id not in catalog:
                raise CatalogError(f"item id {item_id!r} is not in the catalog", path=path, line=line, field=name)
    for i, m in enumerate(conv.messages):
        for item_id in mention_ids(m.content):
            if item_id not in catalog:
                raise CatalogError(unknown_mention(item_id), path=path, line=line, field=f"messages[{i}]")


def load_conversations(path: str | Path, catalog: Catalog | None = None) -> list[Conversation]:
    """Read and validate a conversations JSONL file; ids must be unique; with a catalog, every referenced item
    (targets, exclude, mentions) must be in it (check_conversation_items)."""
    out, seen = [], {}
    for n, rec in read_jsonl(path):
        conv = conversation_from_record(rec, path=str(path), line=n)
        if catalog is not None:
            check_conversation_items(conv, catalog, path=str(path), line=n)
        if conv.id in seen:
            raise CatalogError(f"duplicate conversation id {conv.id!r} (first at line {seen[conv.id]})", path=str(path), line=n, field="id")
        seen[conv.id] = n
        out.append(conv)
    return out


def save_conversations(path: str | Path, convs: Iterable[Conversation]) -> None:
    write_jsonl(path, (c.to_json() for c in convs))


def prediction_from_record(rec: Any, *, path: str | None = None, line: int | None = None) -> Prediction:
    if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("items"), list):
        raise CatalogError("expected {'id': ..., 'items': [...]}", path=path, line=line)
    items = []
    for i, s in enumerate(rec["items"]):
        # another system's ranked list may be plain ids, best first; score, rank and strategy default to -rank, the
        # position and "" (the system is then named after the file)
        if isinstance(s, (str, int)) and not isinstance(s, bool):
            s = {"item_id": s}
        try:
            if not isinstance(s, dict) or not isinstance(s.get("item_id"), (str, int)) or isinstance(s["item_id"], bool):
                raise ValueError(f"got {s!r}")
            rank = int(s.get("rank", i + 1))
            items.append(ScoredItem(str(s["item_id"]), float(s.get("score", -rank)), rank, str(s.get("strategy", ""))))
        except (TypeError, ValueError) as e:
            raise CatalogError(f"bad scored item ({e}); an item is an id, or {{item_id, score, rank, strategy}} of which "
                               f"only item_id is required", path=path, line=line, field=f"items[{i}]") from None
    degraded = rec.get("degraded") or {}
    if not isinstance(degraded, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in degraded.items()):
        raise CatalogError("expected an object strategy -> reason", path=path, line=line, field="degraded")
    return Prediction(str(rec["id"]), items, dict(degraded))


def load_predictions(path: str | Path) -> list[Prediction]:
    return [prediction_from_record(rec, path=str(path), line=n) for n, rec in read_jsonl(path)]


def save_predictions(path: str | Path, preds: Iterable[Prediction]) -> None:
    write_jsonl(path, (p.to_json() for p in preds))


class PredictionLog:
    """Predictions appended as they are made, so a killed job keeps every finished batch and `resume` continues it.

        with PredictionLog("preds.jsonl", resume=True) as out:
            todo = [c for c in convs if c.id not in out.done]
            for batch in batches(todo):
                out.write(recommend(batch))          # one write + flush + fsync per batch

    Each line is complete or absent: a line torn by a kill (no trailing newline, or not JSON) is cut off on resume
    before anything is appended. Without `resume` an existing file is started afresh.
    """

    def __init__(self, path: str | Path, *, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if resume and self.path.exists():
            good = 0  # byte offset after the last complete, parseable line
            with open(self.path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    try:
                        rec = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        break
                    if line.strip():
                        self.done.add(str(rec["id"]))
                    good += len(line)
            with open(self.path, "r+b") as f:
                f.truncate(good)
        self._f = open(self.path, "a" if resume else "w", encoding="utf-8")

    def write(self, preds: Iterable[Prediction]) -> None:
        lines = [json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in preds]
        self._f.write("".join(lines))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.update(json.loads(line)["id"] for line in lines)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
