"""Match unconstrained output text back to catalog items: exact and fuzzy (normalized, edit distance) lookups over
a marisa-trie of id codes and titles (compact: one shared trie of normalized keys -> item rows).

    m = FuzzyMatcher(catalog, idmap)
    m.match("the matrix (1999)")           # [('2571', 0)]  exact after normalization
    m.match("the matrx (1999)")            # [('2571', 1)]  one edit away
    m.find_mentions("I loved Heat (1995) and Jumanji")   # items whose key appears in free text
"""

from __future__ import annotations

from typing import Any

import marisa_trie

from dlsearch.data.catalog import Catalog, normalize_title


def normalize_key(text: str) -> str:
    """Normalization shared by keys and queries: normalize_title (NFKC, lower, collapsed spaces, leading article)."""
    return normalize_title(text.strip())


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, returning limit + 1 as soon as it must exceed limit (banded rows)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        best = i
        for j, cb in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            best = min(best, cur[j])
        if best > limit:
            return limit + 1
        prev = cur
    return prev[-1]


class FuzzyMatcher:
    """Normalized id codes and titles of a catalog in one marisa RecordTrie (key -> catalog row)."""

    def __init__(self, catalog: Catalog, idmap: Any | None = None, *, titles: bool = True, years: bool = True):
        self.catalog = catalog
        keys: list[tuple[str, tuple[int]]] = []
        for row, item in enumerate(catalog):
            if idmap is not None:
                keys.append((normalize_key(idmap.code(item.id)), (row,)))
            keys.append((normalize_key(item.id), (row,)))
            if titles:
                keys.append((normalize_key(item.title), (row,)))
                if years:  # also match a title written without its year
                    keys.append((normalize_title(item.title, drop_year=True), (row,)))
        self.trie = marisa_trie.RecordTrie("<i", [k for k in keys if k[0]])

    def exact(self, text: str) -> list[str]:
        key = normalize_key(text)
        return list(dict.fromkeys(self.catalog.items[r].id for (r,) in self.trie.get(key, [])))

    def match(self, text: str, *, max_distance: int | None = None, prefix_len: int = 2,
              max_candidates: int = 20000) -> list[tuple[str, int]]:
        """Items whose key is within max_distance edits (default: 1 per 5 characters, at least 1) of text, best
        first. Candidates share the first prefix_len characters (typos rarely hit the first letters)."""
        key = normalize_key(text)
        hits = self.exact(text)
        if hits:
            return [(i, 0) for i in hits]
        limit = max_distance if max_distance is not None else max(1, len(key) // 5)
        best: dict[str, int] = {}
        for n, cand in enumerate(self.trie.iterkeys(key[:prefix_len])):
            if n >= max_candidates:
                break
            d = edit_distance(key, cand, limit)
            if d <= limit:
                for (r,) in self.trie[cand]:
                    iid = self.catalog.items[r].id
                    best[iid] = min(best.get(iid, d), d)
        return sorted(best.items(), key=lambda kv: (kv[1], kv[0]))

    def find_mentions(self, text: str) -> list[tuple[str, int, int]]:
        """(item_id, start, end) of the longest catalog keys found in free text at word starts, left to right."""
        norm = normalize_key(text)
        out: list[tuple[str, int, int]] = []
        i = 0
        while i < len(norm):
            if i == 0 or not norm[i - 1].isalnum():
                found = [p for p in self.trie.prefixes(norm[i:]) if i + len(p) == len(norm) or not norm[i + len(p)].isalnum()]
                if found:
                    p = max(found, key=len)
                    out.append((self.catalog.items[self.trie[p][0][0]].id, i, i + len(p)))
                    i += len(p)
                    continue
            i += 1
        return out


