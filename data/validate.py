"""`dlsearch data validate`: check a catalog, or a whole dataset folder (catalog, conversations, histories), and
report what will hurt training without being an error.

    dlsearch data validate my-dataset/
    dlsearch data validate catalog.csv --conversations conversations.jsonl --histories histories.tsv

Errors (a CatalogError naming file, line and field) stop at the first bad record: malformed rows, control
characters in ids, titles with no visible character, mentions/targets/history items missing from the catalog.
Warnings are counted with examples: repeated titles (the same name for several items: a title->id prompt with
several answers), ids that collide after tokenization (or, without a tokenizer, after Unicode/case folding),
items with empty text, and titles with no name (only a year, like ReDial's " (2015)").
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Iterable, Mapping

from dlsearch.data.catalog import Catalog
from dlsearch.data.titles import normalize_title, split_title_year

EXAMPLES = 5  # examples listed per warning


def _groups(keys: Iterable[tuple[str, str]]) -> list[list[str]]:
    by: dict[str, list[str]] = {}
    for key, item_id in keys:
        by.setdefault(key, []).append(item_id)
    return [ids for ids in by.values() if len(ids) > 1]


def catalog_warnings(catalog: Catalog, tokenizer: Any = None) -> dict[str, Any]:
    """Repeated titles, id collisions, empty text, nameless titles: counts and a few examples each."""
    repeated = _groups((normalize_title(it.title), it.id) for it in catalog)
    if tokenizer is not None:
        key = lambda i: tokenizer.decode(tokenizer.encode(i, add_special_tokens=False)).strip()  # noqa: E731
        how = "tokenization"
    else:
        key = lambda i: unicodedata.normalize("NFKC", i).casefold()  # noqa: E731
        how = "NFKC + case folding"
    collisions = _groups((key(it.id), it.id) for it in catalog)
    empty_text = [it.id for it in catalog if not it.text.strip()]
    nameless = [it.id for it in catalog if not split_title_year(it.title)[0].strip()]
    return {
        "repeated_titles": {"groups": len(repeated), "items": sum(map(len, repeated)),
                            "examples": [{i: catalog[i].title for i in g} for g in repeated[:EXAMPLES]]},
        "id_collisions": {"after": how, "groups": len(collisions), "items": sum(map(len, collisions)), "examples": collisions[:EXAMPLES]},
        "empty_text": {"items": len(empty_text), "examples": empty_text[:EXAMPLES]},
        "titles_without_name": {"items": len(nameless), "examples": {i: catalog[i].title for i in nameless[:EXAMPLES]}},
    }


def validate_dataset(path: str | Path, *, columns: Mapping[str, str] | None = None, concept_sep: str = "|",
                     fmt: str | None = None, delimiter: str | None = None, conversations: Iterable[str] = (),
                     histories: str | None = None, tokenizer: str | None = None,
                     limits: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """Validate a catalog file (+ optional conversations / histories files) or a dataset folder; return the report.

    Raises:
        CatalogError naming file, line and field at the first invalid record; FileNotFoundError.
    """
    from dlsearch.data.formats import SPLIT_NAMES
    from dlsearch.data.loaders import dataset_files, load_catalog, load_histories_table, load_utterances
    from dlsearch.data.turns import as_turn_records

    path = Path(path)
    limits = dict(limits or {})
    conv_files: list[tuple[Path, str | None]] = [(Path(c), None) for c in conversations]
    hist_file = Path(histories) if histories else None
    if path.is_dir():
        files = dataset_files(path)
        cat_path, conv_files, hist_file = files.catalog, files.conversations + conv_files, hist_file or files.histories
        fmt = None
    else:
        cat_path = path
    catalog = load_catalog(cat_path, columns, concept_sep=concept_sep, fmt=fmt, delimiter=delimiter, **limits)
    summary = catalog.summary()
    optional = (("text", "with_text"), ("concepts", "with_concepts"), ("meta", "with_meta"))
    report: dict[str, Any] = {"path": str(path), "catalog": str(cat_path),
                              "fields_present": ["id", "title"] + [f for f, n in optional if summary[n]], **summary}
    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    report["warnings"] = catalog_warnings(catalog, tok)
    if conv_files:
        per_file = {}
        for f, split in conv_files:
            convs = load_utterances(f, delimiter=delimiter, split=split, catalog=catalog)
            turns = as_turn_records(convs)
            splits: dict[str, int] = {}
            for c in convs:
                s = c.meta.get("split", "none")
                splits[s] = splits.get(s, 0) + 1
            per_file[str(f)] = {"conversations": len(convs), "with_targets": sum(1 for c in convs if c.targets),
                                "records_after_cutting": len(turns), "targets": sum(len(t.targets) for t in turns),
                                "dialogues_without_turns": sum(1 for c in convs if not c.targets and
                                                               not any(t.meta.get("dialogue_id") == c.id for t in turns)),
                                "by_split": splits}
        report["conversations"] = per_file
        report["split_names"] = sorted(set(SPLIT_NAMES))
    if hist_file is not None:
        hist = load_histories_table(hist_file, delimiter=delimiter)
        unknown = [(u, i) for u, ev in hist.items() for i, _ in ev if i not in catalog]
        if unknown:
            raise ValueError(f"{hist_file}: {len(unknown)} events on items not in the catalog, e.g. user {unknown[0][0]!r} item {unknown[0][1]!r}")
        report["histories"] = {"path": str(hist_file), "users": len(hist), "events": sum(map(len, hist.values())),
                               "users_with_3_or_more": sum(1 for ev in hist.values() if len(ev) >= 3)}
    return report
