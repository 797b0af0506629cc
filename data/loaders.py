"""Generic catalog loader for JSONL, CSV and parquet files with a column mapping, backed by `datasets`.

    from dlsearch.data.loaders import load_catalog
    cat = load_catalog("movies.csv", columns={"id": "movieId", "title": "movieName", "concepts": "genres"},
                       concept_sep="|")

`columns` maps catalog fields (id, title, text, concepts, meta) to the file's column names; unmapped fields use
their own name when the file has that column. In CSV and parquet files, columns that map to no field are kept in
`meta`; a JSONL file without a mapping is the strict catalog format (unknown keys are an error: usually typos).
Every error is a CatalogError naming the file, the 1-based line (JSONL, CSV header) or data row (CSV, parquet),
and the field: duplicate ids with conflicting rows, empty titles, non-UTF-8 bytes, missing columns.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from dlsearch.data.catalog import CATALOG_FIELDS, Catalog, CatalogError, item_from_record, read_jsonl

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown catalog format {fmt!r}; choose json, csv or parquet")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise CatalogError(f"cannot tell the format from suffix {path.suffix!r}; use .jsonl, .csv or .parquet (or pass fmt)", path=str(path)) from None


def _check_utf8(path: Path) -> None:
    """Text formats: find the first line with non-UTF-8 bytes before `datasets` fails without a location."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CatalogError(f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})", path=str(path), line=n) from None


def _read_table(path: Path, fmt: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (as dicts) and column names, read with `datasets` (every CSV column as text: ids stay '007')."""
    import datasets

    datasets.disable_progress_bars()
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        if not header:
            raise CatalogError("file is empty (no header row)", path=str(path), line=1)
        features = datasets.Features({c: datasets.Value("string") for c in header})
        ds = datasets.Dataset.from_csv(str(path), features=features, na_filter=False, keep_in_memory=True)
    elif fmt == "parquet":
        ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    else:
        ds = datasets.Dataset.from_json(str(path), keep_in_memory=True)
    return ds.to_list(), list(ds.column_names)


def _jsonl_line_numbers(path: Path) -> list[int]:
    """1-based line of each record (blank lines skipped), so JSONL errors point at the file's own lines."""
    return [n for n, _ in read_jsonl(path)]


def load_catalog(path: str | Path, columns: Mapping[str, str] | None = None, *, concept_sep: str = "|",
                 fmt: str | None = None) -> Catalog:
    """Read and validate a catalog from JSONL, CSV or parquet.

    Args:
        path: the file; the format comes from its suffix (.jsonl/.json, .csv, .parquet) unless `fmt` is given.
        columns: catalog field -> file column, e.g. {"id": "movieId", "title": "movieName", "concepts": "genres"}.
        concept_sep: separator splitting a text concepts column ("Comedy|Drama").
        fmt: "json", "csv" or "parquet" to override the suffix.
    Returns:
        Catalog in file order (identical repeated rows collapse to one).
    Raises:
        FileNotFoundError; CatalogError naming file, line/row and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = _format(path, fmt)
    columns = dict(columns or {})
    bad = sorted(set(columns) - set(CATALOG_FIELDS))
    if bad:
        raise ValueError(f"column mapping names unknown catalog field(s) {bad}; fields are {list(CATALOG_FIELDS)}")
    if fmt == "json" and not columns:
        from dlsearch.data.catalog import load_catalog_jsonl  # the strict native format, validated line by line

        return load_catalog_jsonl(path)
    if fmt != "parquet":
        _check_utf8(path)
        if fmt == "json":
            _jsonl_line_numbers(path)  # locates invalid JSON before `datasets` reports it without a line
    try:
        rows, names = _read_table(path, fmt)
    except CatalogError:
        raise
    except Exception as e:  # pyarrow / pandas parse errors: keep their text, name the file
        raise CatalogError(f"cannot read as {fmt}: {e}", path=str(path)) from None
    if not rows:
        raise CatalogError("catalog is empty", path=str(path))

    unit = "line" if fmt == "json" else "row"
    numbers = _jsonl_line_numbers(path) if fmt == "json" else list(range(1, len(rows) + 1))
    mapping = {f: columns.get(f, f) for f in CATALOG_FIELDS if f in columns or f in names}
    for field in ("id", "title"):
        src = mapping.get(field, field)
        if src not in names:
            raise CatalogError(f"missing column {src!r} for catalog field {field!r}; columns are {names}",
                               path=str(path), line=1 if fmt != "parquet" else None, field=src)
    missing = [src for src in mapping.values() if src not in names]
    if missing:
        raise CatalogError(f"missing column {missing[0]!r}; columns are {names}", path=str(path), line=1 if fmt != "parquet" else None, field=missing[0])
    extra = [c for c in names if c not in mapping.values()]

    items = []
    for n, row in zip(numbers, rows):
        rec: dict[str, Any] = {f: row[src] for f, src in mapping.items()}
        if isinstance(rec.get("concepts"), str):
            rec["concepts"] = rec["concepts"].split(concept_sep)
        if extra:
            rec["meta"] = {**(rec.get("meta") or {}), **{c: row[c] for c in extra if row[c] not in (None, "")}}
        with _named_columns(mapping):
            items.append(item_from_record(rec, path=str(path), line=n, unit=unit))
    with _named_columns(mapping):
        return Catalog(items, source=str(path), lines=numbers, unit=unit)


@contextmanager
def _named_columns(mapping: dict[str, str]) -> Iterator[None]:
    """Re-raise a CatalogError about a catalog field under the file's column name: what the user can fix."""
    try:
        yield
    except CatalogError as e:
        if e.field in mapping and mapping[e.field] != e.field:
            raise CatalogError(e.reason, path=e.path, line=e.line, unit=e.unit, field=mapping[e.field]) from None
        raise
