"""Generic table reader (JSONL, CSV, TSV, parquet) and the catalog loader with a column mapping.

    from dlsearch.data.loaders import load_catalog
    cat = load_catalog("movies.csv", columns={"id": "movieId", "title": "movieName", "concepts": "genres"},
                       concept_sep="|")

`columns` maps catalog fields (id, title, text, concepts, meta) to the file's column names; unmapped fields use
their own name when the file has that column. In CSV/TSV and parquet files, columns that map to no field are kept in
`meta`; a JSONL file without a mapping is the strict catalog format (unknown keys are an error: usually typos).
Every error is a CatalogError naming the file, the 1-based line (JSONL, CSV header) or data row (CSV, parquet),
and the field: duplicate ids with conflicting rows, empty titles, non-UTF-8 bytes, missing columns.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from dlsearch.data.catalog import (CATALOG_FIELDS, MAX_TEXT_BYTES, MAX_TITLE_CHARS, Catalog, CatalogError, item_from_record,
                                   read_jsonl)

if TYPE_CHECKING:
    from dlsearch.data.formats import Conversation

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet"}
DELIMITERS = {"csv": ",", "tsv": "\t"}


@dataclass
class Table:
    """Rows of a JSONL / CSV / TSV / parquet file as dicts, with where each row came from (for error messages)."""

    path: str
    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]  # per row: JSONL line, or 1-based data row (CSV/TSV, parquet)
    unit: str  # "line" (JSONL) or "row"


def table_format(path: str | Path, fmt: str | None = None) -> str:
    """json | csv | tsv | parquet from `fmt` or the file's suffix."""
    path = Path(path)
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown format {fmt!r}; choose json, csv, tsv or parquet")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise CatalogError(f"cannot tell the format from suffix {path.suffix!r}; use .jsonl, .csv, .tsv or .parquet "
                           "(or pass the format)", path=str(path)) from None


_format = table_format


def _check_utf8(path: Path) -> None:
    """Text formats: find the first line with non-UTF-8 bytes, and say where."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CatalogError(f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})", path=str(path), line=n) from None


def _check_header(names: list[str], path: Path, line: int | None) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not str(name).strip():
            raise CatalogError(f"column {i + 1} has an empty name", path=str(path), line=line, field=f"column {i + 1}")
        if name in seen:
            raise CatalogError(f"duplicated column {name!r} (columns {seen[name] + 1} and {i + 1}); rename one",
                               path=str(path), line=line, field=name)
        seen[name] = i


def _read_delimited(path: Path, delimiter: str) -> Table:
    """CSV/TSV with the stdlib reader: a UTF-8 BOM is dropped, ragged rows and duplicated columns are errors that
    name the physical line. Every value stays text (ids stay '007')."""
    _check_utf8(path)
    rows, numbers = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise CatalogError("file is empty (no header row)", path=str(path), line=1)
        _check_header(header, path, 1)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                missing = header[len(row)] if len(row) < len(header) else f"column {len(header) + 1}"
                raise CatalogError(f"{len(row)} fields where the header has {len(header)} (a {'missing' if len(row) < len(header) else 'stray'} "
                                   f"delimiter {delimiter!r} or an unquoted one inside a value?)", path=str(path), line=reader.line_num, field=missing)
            rows.append(dict(zip(header, row)))
            numbers.append(len(rows))
    return Table(str(path), header, rows, numbers, "row")


def read_table(path: str | Path, fmt: str | None = None, *, delimiter: str | None = None) -> Table:
    """Read a JSONL, CSV, TSV or parquet file (format from the suffix unless `fmt`; `delimiter` overrides the
    CSV/TSV one). Raises FileNotFoundError, or CatalogError naming file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = table_format(path, fmt)
    if fmt in DELIMITERS or (delimiter is not None and fmt not in ("parquet", "json")):
        return _read_delimited(path, delimiter or DELIMITERS[fmt])
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow's own parse errors: keep their text, name the file
            raise CatalogError(f"cannot read as parquet: {e}", path=str(path)) from None
        _check_header(list(table.column_names), path, None)
        rows = table.to_pylist()
        return Table(str(path), list(table.column_names), rows, list(range(1, len(rows) + 1)), "row")
    rows, numbers, names = [], [], {}
    for n, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise CatalogError(f"expected a JSON object, got {type(rec).__name__}", path=str(path), line=n)
        rows.append(rec)
        numbers.append(n)
        names.update(dict.fromkeys(rec))
    return Table(str(path), list(names), rows, numbers, "line")


def load_catalog(path: str | Path, columns: Mapping[str, str] | None = None, *, concept_sep: str = "|",
                 fmt: str | None = None, delimiter: str | None = None, max_title_chars: int | None = MAX_TITLE_CHARS,
                 max_text_bytes: int | None = MAX_TEXT_BYTES) -> Catalog:
    """Read and validate a catalog from JSONL, CSV, TSV or parquet.

    Args:
        path: the file; the format comes from its suffix (.jsonl/.json, .csv, .tsv, .parquet) unless `fmt` is given.
        columns: catalog field -> file column, e.g. {"id": "movieId", "title": "movieName", "concepts": "genres"}.
        concept_sep: separator splitting a text concepts column ("Comedy|Drama").
        fmt: "json", "csv", "tsv" or "parquet" to override the suffix.
        delimiter: CSV/TSV field delimiter (default: "," for .csv, tab for .tsv).
        max_title_chars, max_text_bytes: bounds on each item (None: unbounded).
    Returns:
        Catalog in file order (identical repeated rows collapse to one).
    Raises:
        FileNotFoundError; CatalogError naming file, line/row and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = table_format(path, fmt)
    columns = dict(columns or {})
    bad = sorted(set(columns) - set(CATALOG_FIELDS))
    if bad:
        raise ValueError(f"column mapping names unknown catalog field(s) {bad}; fields are {list(CATALOG_FIELDS)}")
    limits = {"max_title_chars": max_title_chars, "max_text_bytes": max_text_bytes}
    if fmt == "json" and not columns:
        from dlsearch.data.catalog import load_catalog_jsonl  # the strict native format, validated line by line

        return load_catalog_jsonl(path, **limits)
    table = read_table(path, fmt, delimiter=delimiter)
    rows, names, numbers, unit = table.rows, table.columns, table.lines, table.unit
    if not rows:
        raise CatalogError("catalog is empty", path=str(path))

    mapping = {f: columns.get(f, f) for f in CATALOG_FIELDS if f in columns or f in names}
    for field in ("id", "title"):
        src = mapping.get(field, field)
        if src not in names:
            raise CatalogError(f"missing column {src!r} for catalog field {field!r}; {_columns_are(names, fmt in DELIMITERS)}",
                               path=str(path), line=1 if fmt != "parquet" else None, field=src)
    missing = [src for src in mapping.values() if src not in names]
    if missing:
        raise CatalogError(f"missing column {missing[0]!r}; {_columns_are(names, fmt in DELIMITERS)}", path=str(path), line=1 if fmt != "parquet" else None, field=missing[0])
    extra = [c for c in names if c not in mapping.values()]

    items = []
    for n, row in zip(numbers, rows):
        rec: dict[str, Any] = {f: row.get(src) for f, src in mapping.items()}
        if isinstance(rec.get("concepts"), str):
            rec["concepts"] = rec["concepts"].split(concept_sep)

        if extra:
            rec["meta"] = {**(rec.get("meta") or {}), **{c: row[c] for c in extra if row.get(c) not in (None, "")}}
        with _named_columns(mapping):
            items.append(item_from_record(rec, path=str(path), line=n, unit=unit, **limits))
    with _named_columns(mapping):
        return Catalog(items, source=str(path), lines=numbers, unit=unit)


def _columns_are(names: list[str], delimited: bool) -> str:
    """'columns are [...]', and when a CSV/TSV header read as one column that holds another delimiter, which one."""
    text = f"columns are {names}"
    if delimited and len(names) == 1:
        seen = [d for d in (";", "\t", "|", ",") if d in names[0]]
        if seen:
            text += f" (one column: the file looks delimited by {seen[0]!r}; pass --delimiter {seen[0]!r})"
    return text


@contextmanager
def _named_columns(mapping: dict[str, str]) -> Iterator[None]:
    """Re-raise a CatalogError about a catalog field under the file's column name: what the user can fix."""
    try:
        yield
    except CatalogError as e:
        if e.field in mapping and mapping[e.field] != e.field:
            raise CatalogError(e.reason, path=e.path, line=e.line, unit=e.unit, field=mapping[e.field]) from None
        raise


# --- conversations, histories and dataset folders ----------------------------------------------------------------

ROLE_ALIASES = {"user": "user", "seeker": "user", "initiator": "user", "customer": "user",
                "assistant": "assistant", "recommender": "assistant", "respondent": "assistant", "agent": "assistant"}
UTTERANCE_COLUMNS = {"conversation_id": ("conversation_id", "dialogue_id", "conversation", "dialog_id"),
                     "role": ("role", "speaker"), "text": ("text", "content", "utterance"),
                     "split": ("split",), "targets": ("targets",)}
HISTORY_COLUMNS = {"user": ("user", "user_id", "userId"), "item": ("item", "item_id", "itemId"),
                   "timestamp": ("timestamp", "time", "position", "ts")}
SPLIT_FILES = {"train": "train", "dev": "validation", "valid": "validation", "validation": "validation", "test": "test"}
Histories = dict[str, list[tuple[str, int]]]


def _pick(table: Table, field: str, aliases: tuple[str, ...], *, required: bool = True) -> str | None:
    for a in aliases:
        if a in table.columns:
            return a
    delimited = table.unit == "row" and not table.path.endswith(".parquet")
    if required:
        raise CatalogError(f"missing column for {field!r}: name one of {list(aliases)}; {_columns_are(table.columns, delimited)}",
                           path=table.path, line=1 if table.unit == "row" else None, field=aliases[0])
    return None


def load_utterances(path: str | Path, fmt: str | None = None, *, delimiter: str | None = None, split: str | None = None,
                    target_sep: str = "|", catalog: Catalog | None = None) -> list["Conversation"]:
    """Conversations from a table of utterances, one row per message in order: conversation_id, role (user |
    assistant; seeker/recommender accepted), text (mentions as @[id] or @id), optional split and targets
    (`target_sep`-separated ids, on any row of a conversation: such a conversation stays one record).
    A JSONL file in the conversations format (data/formats.py) is read as it is. `split` labels every
    conversation of the file (a dataset's own train/dev/test files). With a catalog, every mentioned, target or
    excluded item must be in it (CatalogError naming file, line and field)."""
    from dlsearch.data.formats import Conversation, Message, check_conversation_items, conversation_from_record, mention_ids, split_name, unknown_mention

    path = Path(path)
    table = read_table(path, fmt, delimiter=delimiter)
    if table.unit == "line" and "messages" in table.columns:
        out = [conversation_from_record(r, path=table.path, line=n) for r, n in zip(table.rows, table.lines)]
        if catalog is not None:
            for c, n in zip(out, table.lines):
                check_conversation_items(c, catalog, path=table.path, line=n)
        if split is not None:
            for c in out:
                c.meta.setdefault("split", split)
        return _unique_ids(out, table)
    col = {f: _pick(table, f, a, required=f in ("conversation_id", "role", "text")) for f, a in UTTERANCE_COLUMNS.items()}
    convs: dict[str, Conversation] = {}
    where: dict[str, int] = {}
    for row, n in zip(table.rows, table.lines):
        cid = str(row[col["conversation_id"]] if row.get(col["conversation_id"]) is not None else "").strip()
        if not cid:
            raise CatalogError("empty conversation id", path=table.path, line=n, unit=table.unit, field=col["conversation_id"])
        role = ROLE_ALIASES.get(str(row.get(col["role"]) or "").strip().lower())
        if role is None:
            raise CatalogError(f"role {row.get(col['role'])!r} is not one of {sorted(ROLE_ALIASES)}", path=table.path, line=n,
                               unit=table.unit, field=col["role"])
        text = row.get(col["text"])
        if not isinstance(text, str):
            raise CatalogError("expected text", path=table.path, line=n, unit=table.unit, field=col["text"])
        if catalog is not None:
            unknown = [i for i in mention_ids(text) if i not in catalog]
            if unknown:
                raise CatalogError(unknown_mention(unknown[0]), path=table.path, line=n, unit=table.unit, field=col["text"])
        conv = convs.get(cid)
        if conv is None:
            conv = convs[cid] = Conversation(cid, [])
            where[cid] = n
        conv.messages.append(Message(role, text))
        if col["split"] and row.get(col["split"]) not in (None, ""):
            s = split_name(row[col["split"]], path=table.path, line=n, field=col["split"], unit=table.unit)
            if conv.meta.setdefault("split", s) != s:
                raise CatalogError(f"conversation {cid!r} is in split {conv.meta['split']!r} on {table.unit} {where[cid]} "
                                   f"and {s!r} here", path=table.path, line=n, unit=table.unit, field=col["split"])
        if col["targets"] and row.get(col["targets"]) not in (None, ""):
            for t in (t.strip() for t in str(row[col["targets"]]).split(target_sep)):
                if t and catalog is not None and t not in catalog:
                    raise CatalogError(f"target {t!r} is not a catalog item", path=table.path, line=n, unit=table.unit, field=col["targets"])
                if t and t not in conv.targets:
                    conv.targets.append(t)
    out = list(convs.values())
    if split is not None:
        for c in out:
            c.meta.setdefault("split", split)
    return out


def _unique_ids(convs: list["Conversation"], table: Table) -> list["Conversation"]:
    seen: dict[str, int] = {}
    for c, n in zip(convs, table.lines):
        if c.id in seen:
            raise CatalogError(f"duplicate conversation id {c.id!r} (first at {table.unit} {seen[c.id]})", path=table.path, line=n, field="id")
        seen[c.id] = n
    return convs


def load_histories_table(path: str | Path, fmt: str | None = None, *, delimiter: str | None = None) -> Histories:
    """User histories: JSONL {"id": user, "events": [[item_id, timestamp], ...]} or a table with columns user, item
    and timestamp (or position; a missing one is the row order). Returns user -> [(item_id, time)] in time order."""
    from dlsearch.data.catalog import check_item_id

    table = read_table(path, fmt, delimiter=delimiter)
    out: Histories = {}
    if table.unit == "line" and "events" in table.columns:
        for r, n in zip(table.rows, table.lines):
            ev = r.get("events")
            if "id" not in r or not isinstance(ev, list):
                raise CatalogError("expected {'id': user, 'events': [[item_id, timestamp], ...]}", path=table.path, line=n)
            for i, e in enumerate(ev):
                if not isinstance(e, (list, tuple)) or len(e) != 2:
                    raise CatalogError("event must be [item_id, timestamp]", path=table.path, line=n, field=f"events[{i}]")
                out.setdefault(str(r["id"]), []).append((check_item_id(str(e[0]), path=table.path, line=n, field=f"events[{i}]"),
                                                         _time(e[1], table, n, f"events[{i}]")))
    else:
        ucol, icol = _pick(table, "user", HISTORY_COLUMNS["user"]), _pick(table, "item", HISTORY_COLUMNS["item"])
        tcol = _pick(table, "timestamp", HISTORY_COLUMNS["timestamp"], required=False)
        for pos, (r, n) in enumerate(zip(table.rows, table.lines)):
            item = check_item_id(str(r[icol]), path=table.path, line=n, field=icol, unit=table.unit)
            out.setdefault(str(r[ucol]), []).append((item, _time(r[tcol], table, n, tcol) if tcol else pos))
    return {u: sorted(ev, key=lambda e: (e[1], e[0])) for u, ev in out.items()}


def _time(value: Any, table: Table, line: int, field: str) -> int:
    """A number (unix time or a position), or an ISO 8601 date/time (no zone: UTC), as whole seconds."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        pass
    from datetime import date, datetime, timezone

    t = value if isinstance(value, datetime) else None  # parquet timestamp columns read as datetime / date
    if isinstance(value, date) and not isinstance(value, datetime):
        t = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    if t is not None:
        return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp())
    raise CatalogError(f"timestamp/position {value!r} is neither a number nor an ISO 8601 date/time", path=table.path,
                       line=line, unit=table.unit, field=field)


def _find(root: Path, stem: str) -> Path | None:
    hits = [root / f"{stem}{ext}" for ext in FORMATS if (root / f"{stem}{ext}").is_file()]
    if len(hits) > 1:
        raise ValueError(f"{root}: several {stem} files {[h.name for h in hits]}; keep one")
    return hits[0] if hits else None


@dataclass
class DatasetFiles:
    """What a dataset folder holds (see docs/own-data.md)."""

    catalog: Path
    conversations: list[tuple[Path, str | None]]  # (file, split it labels or None)
    histories: Path | None


def dataset_files(root: str | Path) -> DatasetFiles:
    """A dataset folder: catalog.<ext>; conversations.<ext> and/or the dataset's own train|dev|valid|validation|test
    .<ext> conversation files; optional histories.<ext> (ext: jsonl, csv, tsv, parquet)."""
    root = Path(root)
    catalog = _find(root, "catalog")
    if catalog is None:
        raise FileNotFoundError(f"{root}: a dataset folder needs catalog.jsonl|csv|tsv|parquet (see docs/own-data.md)")
    convs: list[tuple[Path, str | None]] = []
    whole = _find(root, "conversations")
    if whole is not None:
        convs.append((whole, None))
    for stem, split in SPLIT_FILES.items():
        f = _find(root, stem)
        if f is not None:
            convs.append((f, split))
    return DatasetFiles(catalog, convs, _find(root, "histories"))
