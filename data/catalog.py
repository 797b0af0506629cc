"""The catalog: items with stable ids, titles, optional text, concepts and metadata.

The catalog JSONL format (one item per line):

    {"id": "1", "title": "Toy Story (1995)", "text": "...", "concepts": ["Animation", "Comedy"], "meta": {...}}

`id` and `title` are required; `text` (str), `concepts` (list of str) and `meta` (object) are optional.
Every reader validates and raises `CatalogError` naming the file, the 1-based line and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from dlsearch.data.titles import normalize_title, split_title_year  # noqa: F401  (re-exported: one home, data/titles.py)

CATALOG_FIELDS = ("id", "title", "text", "concepts", "meta")
MAX_TITLE_CHARS = 512  # default bound: a 50 MB title took the title-trie build past 5 min and 10 GB
MAX_TEXT_BYTES = 64 * 1024  # default bound on an item's text (UTF-8 bytes)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_visible_char(text: str) -> bool:
    """True when text has a character that is neither whitespace/separator (Z*) nor control/format (C*: NBSP is
    Zs, zero-width space and joiners are Cf): a title made only of those would read as nothing."""
    return any(unicodedata.category(ch)[0] not in "ZC" for ch in text)


def check_item_id(value: str, *, path: str | None = None, line: int | None = None, field: str = "id",
                  unit: str = "line") -> str:
    """An item id must be printable: no control characters (newline, tab, NUL ...), no surrounding whitespace."""
    m = _CONTROL_RE.search(value)
    if m:
        raise CatalogError(f"id {value!r} contains the control character {m.group(0)!r}; ids must be printable",
                           path=path, line=line, unit=unit, field=field)
    if value != value.strip() or not value:
        raise CatalogError(f"id {value!r} is empty or has leading or trailing whitespace", path=path, line=line, unit=unit, field=field)
    return value


class CatalogError(ValueError):
    """Bad catalog input. The message names the file, the 1-based line or row, and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None,
                 unit: str = "line"):
        # unit: "line" for text lines (JSONL), "row" for table rows (CSV data rows, parquet rows), both 1-based
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"{unit} {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__((": ".join([", ".join(where), message])) if where else message)
        self.path, self.line, self.field, self.unit, self.reason = path, line, field, unit, message


@dataclass(frozen=True)
class Item:
    """One catalog item. `id` is stable and unique; `title` is kept exactly as given."""

    id: str
    title: str
    text: str = ""
    concepts: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "concepts": list(self.concepts), "meta": self.meta}


def _check_str(value: Any, *, path: str | None, line: int | None, name: str, required: bool, unit: str = "line") -> str:
    if value is None:
        if required:
            raise CatalogError("missing required field", path=path, line=line, unit=unit, field=name)
        return ""
    if isinstance(value, (int,)) and not isinstance(value, bool) and name == "id":
        value = str(value)  # numeric ids from CSV/JSON are accepted and kept as their decimal text
    if not isinstance(value, str):
        raise CatalogError(f"expected a string, got {type(value).__name__}", path=path, line=line, unit=unit, field=name)
    if required and not value.strip():
        raise CatalogError("empty or whitespace-only value", path=path, line=line, unit=unit, field=name)
    return value


def item_from_record(rec: Any, *, path: str | None = None, line: int | None = None, unit: str = "line",
                     max_title_chars: int | None = MAX_TITLE_CHARS, max_text_bytes: int | None = MAX_TEXT_BYTES) -> Item:
    """Validate one record (dict) and build an Item. Unknown keys are an error: they are usually typos.
    Titles must have a visible character, no control characters and at most max_title_chars characters; text at
    most max_text_bytes UTF-8 bytes (None: unbounded)."""
    if not isinstance(rec, dict):
        raise CatalogError(f"expected a JSON object, got {type(rec).__name__}", path=path, line=line, unit=unit)
    unknown = sorted(set(rec) - set(CATALOG_FIELDS))
    if unknown:
        raise CatalogError(f"unknown field(s) {unknown}; allowed: {list(CATALOG_FIELDS)}", path=path, line=line, unit=unit, field=unknown[0])
    item_id = _check_str(rec.get("id"), path=path, line=line, unit=unit, name="id", required=True)
    if item_id != item_id.strip():
        raise CatalogError("id has leading or trailing whitespace", path=path, line=line, unit=unit, field="id")
    check_item_id(item_id, path=path, line=line, unit=unit)
    title = _check_str(rec.get("title"), path=path, line=line, unit=unit, name="title", required=True)
    if not has_visible_char(title):
        raise CatalogError(f"title {title!r} has no visible character (only spaces, NBSP or zero-width characters)",
                           path=path, line=line, unit=unit, field="title")
    if _CONTROL_RE.search(title):
        raise CatalogError(f"title {title!r} contains a control character (newline, tab, NUL ...)", path=path, line=line, unit=unit, field="title")
    if max_title_chars is not None and len(title) > max_title_chars:
        raise CatalogError(f"title has {len(title):,} characters, more than max_title_chars={max_title_chars}",
                           path=path, line=line, unit=unit, field="title")
    text = _check_str(rec.get("text"), path=path, line=line, unit=unit, name="text", required=False)
    if max_text_bytes is not None and len(text.encode("utf-8")) > max_text_bytes:
        raise CatalogError(f"text has {len(text.encode('utf-8')):,} bytes, more than max_text_bytes={max_text_bytes}",
                           path=path, line=line, unit=unit, field="text")
    concepts = rec.get("concepts") or []
    if isinstance(concepts, str):
        raise CatalogError("expected a list of strings, got a string (split it into a list)", path=path, line=line, unit=unit, field="concepts")
    if not isinstance(concepts, (list, tuple)) or not all(isinstance(c, str) for c in concepts):
        raise CatalogError("expected a list of strings", path=path, line=line, unit=unit, field="concepts")
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise CatalogError(f"expected an object, got {type(meta).__name__}", path=path, line=line, unit=unit, field="meta")
    return Item(id=item_id, title=title, text=text, concepts=tuple(c.strip() for c in concepts if c.strip()), meta=meta)


class Catalog:
    """An ordered, validated collection of items with O(1) lookup by id.

    Order is the order items were given; `index(id)` is the row of an item (used by every index and embedding
    matrix). Ids are unique: a repeated id is an error unless the rows are identical (then it is dropped).
    """

    def __init__(self, items: Iterable[Item], *, source: str | None = None, lines: list[int] | None = None,
                 unit: str = "line"):
        self.items: list[Item] = []
        self._index: dict[str, int] = {}
        for n, item in enumerate(items):
            prev = self._index.get(item.id)
            if prev is not None:
                line = lines[n] if lines else n + 1
                first = lines[prev] if lines else prev + 1
                if self.items[prev] == item:
                    continue
                raise CatalogError(
                    f"duplicate id {item.id!r} with conflicting content (first seen at {unit} {first})",
                    path=source, line=line, field="id", unit=unit,
                )
            self._index[item.id] = len(self.items)
            self.items.append(item)
        self.source = source

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def __getitem__(self, item_id: str) -> Item:
        try:
            return self.items[self._index[item_id]]
        except KeyError:
            raise KeyError(f"unknown item id {item_id!r}") from None

    def index(self, item_id: str) -> int:
        return self._index[item_id]

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def subset(self, ids: Iterable[str]) -> "Catalog":
        """A catalog of the given ids, in the given order."""
        return Catalog([self[i] for i in ids], source=self.source)

    def content_hash(self) -> str:
        """sha256 over the canonical JSON of the items in id order: the catalog's version fingerprint."""
        h = hashlib.sha256()
        for it in sorted(self.items, key=lambda x: x.id):
            h.update(json.dumps(it.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Counts for `dlsearch data validate`: items, fields present, repeated titles."""
        titles: dict[str, int] = {}
        for it in self.items:
            key = normalize_title(it.title)
            titles[key] = titles.get(key, 0) + 1
        return {
            "items": len(self.items),
            "with_text": sum(1 for it in self.items if it.text),
            "with_concepts": sum(1 for it in self.items if it.concepts),
            "with_meta": sum(1 for it in self.items if it.meta),
            "repeated_titles": sum(1 for c in titles.values() if c > 1),
            "items_with_repeated_title": sum(c for c in titles.values() if c > 1),
            "content_hash": self.content_hash(),
        }

    def save_jsonl(self, path: str | Path) -> None:
        write_jsonl(path, (it.to_json() for it in self.items))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed object) for every non-blank line; errors name file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CatalogError(f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})", path=str(path), line=n) from None
            if not text.strip():
                continue
            try:
                yield n, json.loads(text)
            except json.JSONDecodeError as e:
                raise CatalogError(f"invalid JSON: {e.msg} at column {e.colno}", path=str(path), line=n) from None


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records atomically (temp file + rename) so an interrupted write never leaves half a file."""
    from dlsearch.data.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))


def load_catalog_jsonl(path: str | Path, *, max_title_chars: int | None = MAX_TITLE_CHARS,
                       max_text_bytes: int | None = MAX_TEXT_BYTES) -> Catalog:
    """Read and validate a catalog JSONL file (see module docstring)."""
    items, lines = [], []
    for n, rec in read_jsonl(path):
        items.append(item_from_record(rec, path=str(path), line=n, max_title_chars=max_title_chars, max_text_bytes=max_text_bytes))
        lines.append(n)
    if not items:
        raise CatalogError("catalog is empty", path=str(path))
    return Catalog(items, source=str(path), lines=lines)
