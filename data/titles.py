"""Titles: normalization, duplicate groups (one work, several catalog items) and title lookups.

    from dlsearch.data.titles import titles_of
    t = titles_of(catalog)                       # built once per Catalog object, then cached
    t.group("140395")                            # ('85036', '140395'): "The Matrix (1999)" and "The Matrix "
    t.excluded_ids(["140395"])                   # {'85036', '140395'}: excluding one member excludes the group
    keep = t.keep(rows, excluded_rows)           # positions of a ranked row list to keep (one per group)
    t.lookup("the matrix")                       # [('85036', 0)]: exact normalized title, then edit distance

Two catalog items are the same work (one duplicate group) when
  * their normalized titles and years are equal ("Police Academy  (1984)" and "Police Academy (1984)"),
  * they are linked to the same item of another dataset (`meta["movielens_ids"]`, see data/linking.py), or
  * one has no year and exactly one distinct year is written for that normalized title in the catalog: it joins
    that group ("The Matrix " -> "The Matrix (1999)"). With several years ("Halloween" 1978 / 2007 / 2018) a
    yearless title stays on its own: nothing says which one it is.
Every place that applies exclusions (router, evaluation, direct search masks) goes through `excluded_ids` / `keep`,
so no result list holds two members of one group.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # catalog.py imports this module for normalize_title; no runtime cycle
    from dlsearch.data.catalog import Catalog

_YEAR_RE = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE_RE = re.compile(r"^(.*), (the|a|an|les|la|le|il|el|die|der|das)$")
_NON_WORD_RE = re.compile(r"[^\w]+")


def split_title_year(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a trailing '(yyyy)' keeps year None."""
    m = _YEAR_RE.search(title)
    if m is None:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def normalize_title(title: str, *, drop_year: bool = False) -> str:
    """Normalized form for matching: NFKC, lowercase, collapsed whitespace, an English trailing article moved
    to the front ('Matrix, The' -> 'the matrix'); with drop_year the '(yyyy)' suffix is removed.
    The original title is never changed: callers keep both."""
    base, year = split_title_year(unicodedata.normalize("NFKC", title))
    base = re.sub(r"\s+", " ", base).strip().lower()
    m = _ARTICLE_RE.match(base)
    if m:
        base = f"{m.group(2)} {m.group(1)}"
    if drop_year or year is None:
        return base
    return f"{base} ({year})"


def title_words(text: str) -> str:
    """Words only: normalize_title's form with accents and punctuation removed ('Spider-Man: Homecoming' ->
    'spider man homecoming', 'Amélie' -> 'amelie'). The form free text and titles are compared in."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).lower())
    text = "".join(c for c in text if not unicodedata.combining(c)).replace("'", "").replace("\u2019", "")
    return " ".join(_NON_WORD_RE.sub(" ", text).replace("_", " ").split())


def work_key(title: str) -> tuple[str, int | None]:
    """(words of the normalized title without year, year): equal keys are the same work."""
    base, year = split_title_year(title)
    return title_words(normalize_title(base, drop_year=True)), year


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance (rapidfuzz), limit + 1 when it exceeds limit."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b, score_cutoff=limit)


@dataclass
class Titles:
    """Duplicate groups and title lookups of one catalog (see module docstring). Rows are catalog rows."""

    catalog: "Catalog"
    group_of: list[int]            # row -> group number
    members: list[tuple[int, ...]]  # group number -> rows, best-known first (with a year, most mentioned)
    by_words: dict[str, list[int]]  # title words without year -> rows
    by_year: dict[tuple[str, int], list[int]]  # (title words, year) -> rows

    def group(self, item_id: str) -> tuple[str, ...]:
        """Ids of every item that is the same work as item_id (itself included), representative first."""
        items = self.catalog.items
        return tuple(items[r].id for r in self.members[self.group_of[self.catalog.index(item_id)]])

    def excluded_rows(self, ids: Iterable[str]) -> set[int]:
        """Catalog rows of every member of the groups of `ids` (unknown ids are ignored)."""
        out: set[int] = set()
        for i in ids:
            if i in self.catalog:
                out.update(self.members[self.group_of[self.catalog.index(i)]])
        return out

    def excluded_ids(self, ids: Iterable[str]) -> set[str]:
        """`ids` and every item in their duplicate groups."""
        return {self.catalog.items[r].id for r in self.excluded_rows(ids)} | set(ids)

    def keep(self, rows: Sequence[int], excluded_rows: set[int] = frozenset()) -> list[int]:
        """Positions of a ranked row list to keep: no padding (-1), no excluded group, one member per group
        (its best-ranked one). `excluded_rows` must come from `excluded_rows` (whole groups)."""
        seen: set[int] = set()
        out = []
        for pos, r in enumerate(rows):
            r = int(r)
            if r < 0 or r in excluded_rows:
                continue
            g = self.group_of[r]
            if g in seen:
                continue
            seen.add(g)
            out.append(pos)
        return out

    def keep_ids(self, ids: Sequence[str], exclude: Iterable[str] = ()) -> list[int]:
        """`keep` for a ranked list of item ids (ids not in the catalog are kept: nothing is known about them)."""
        excl = self.excluded_rows(exclude)
        known = [self.catalog.index(i) if i in self.catalog else -2 - n for n, i in enumerate(ids)]
        seen: set[int] = set()
        out = []
        for pos, r in enumerate(known):
            if r < -1:
                out.append(pos)
                continue
            if r in excl or self.group_of[r] in seen:
                continue
            seen.add(self.group_of[r])
            out.append(pos)
        return out

    def exact(self, text: str) -> list[int]:
        """Catalog rows titled exactly `text` after normalization (year optional), best-known member of each
        group first; [] when no title is written so."""
        words, year = work_key(text)
        rows = (self.by_year.get((words, year), []) if year is not None else self.by_words.get(words, [])) if words else []
        order = {r: n for g in {self.group_of[r] for r in rows} for n, r in enumerate(self.members[g])}
        return sorted(rows, key=lambda r: (order[r], r))

    def lookup(self, text: str, *, max_distance: int | None = None) -> list[tuple[str, int]]:
        """Items titled `text` (year optional): exact title words first, else within max_distance edits (default:
        1 per 6 characters, none under 6), as (item id, distance), best first; one item per duplicate group."""
        words, year = work_key(text)
        if not words:
            return []
        rows = self.exact(text)
        if rows:
            return [(self.catalog.items[rows[p]].id, 0) for p in self.keep(rows)]
        limit = len(words) // 6 if max_distance is None else max_distance
        if limit < 1:
            return []
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        keys = list(self.by_words)
        hits = process.extract(words, keys, scorer=Levenshtein.distance, score_cutoff=limit, limit=20)
        ranked: list[tuple[int, int]] = []
        for key, d, _ in sorted(hits, key=lambda h: (h[1], h[0])):
            cands = self.by_words[key]
            if year is not None:
                cands = [r for r in cands if split_title_year(self.catalog.items[r].title)[1] == year] or cands
            ranked += [(r, int(d)) for r in cands]
        kept = self.keep([r for r, _ in ranked])
        return [(self.catalog.items[ranked[p][0]].id, ranked[p][1]) for p in kept]


def build_titles(catalog: "Catalog") -> Titles:
    """Duplicate groups and lookup tables of a catalog (~50 ms for 10k items)."""
    n = len(catalog)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_words: dict[str, list[int]] = {}
    by_year: dict[tuple[str, int], list[int]] = {}
    by_link: dict[str, int] = {}
    years: list[int | None] = []
    for row, it in enumerate(catalog):
        words, year = work_key(it.title)
        years.append(year)
        by_words.setdefault(words, []).append(row)
        if year is not None:
            first = by_year.setdefault((words, year), [row])[0]
            if first != row:
                by_year[(words, year)].append(row)
                union(first, row)
        for link in (it.meta or {}).get("movielens_ids") or []:
            union(by_link.setdefault(str(link), row), row)
    for words, rows in by_words.items():
        dated = {years[r] for r in rows if years[r] is not None}
        undated = [r for r in rows if years[r] is None]
        if len(dated) == 1 and undated:
            anchor = next(r for r in rows if years[r] is not None)
            for r in undated:
                union(anchor, r)
        elif not dated and len(undated) > 1:  # same title, no year anywhere: one work as far as anyone can tell
            for r in undated[1:]:
                union(undated[0], r)
    roots: dict[int, int] = {}
    group_of = [roots.setdefault(find(r), len(roots)) for r in range(n)]
    grouped: list[list[int]] = [[] for _ in roots]
    for r, g in enumerate(group_of):
        grouped[g].append(r)

    def rank(r: int) -> tuple:
        meta = catalog.items[r].meta or {}
        return (years[r] is None, -int(meta.get("nbMentions", 0) or 0), r)

    members = [tuple(sorted(rows, key=rank)) for rows in grouped]
    return Titles(catalog, group_of, members, by_words, by_year)


_CACHE: "weakref.WeakKeyDictionary[Catalog, Titles]" = weakref.WeakKeyDictionary()


def titles_of(catalog: "Catalog") -> Titles:
    """The Titles of a catalog, built on first use and cached for the life of the Catalog object (catalogs are
    not changed after loading)."""
    t = _CACHE.get(catalog)
    if t is None or len(t.group_of) != len(catalog):
        t = _CACHE[catalog] = build_titles(catalog)
    return t
