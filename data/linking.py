"""Link catalog items across datasets by normalized title and year (ReDial movies -> MovieLens movies).

A title matches when `normalize_title` of both sides (NFKC, lowercase, collapsed whitespace, trailing article moved
to the front, "(yyyy)" kept) is equal. MovieLens also writes alternative titles in parentheses before the year
("Cité des enfants perdus, La (City of Lost Children, The) (1995)"); each alternative is a second key with the
same year. Titles without a year never match: the year is what makes a title match trustworthy.
"""

from __future__ import annotations

import re

from dlsearch.data.catalog import Catalog, normalize_title, split_title_year

_ALT_RE = re.compile(r"^(.*?)\s*\(([^()]*)\)$")  # "Main (Alternative)" before the year


def title_keys(title: str) -> list[str]:
    """Normalized keys of a title: the full title first, then 'main (year)' and 'alternative (year)' when the
    title has a parenthesised alternative. Empty when the title has no year."""
    base, year = split_title_year(title)
    if year is None:
        return []
    keys = [normalize_title(title)]
    m = _ALT_RE.match(base)
    if m:
        alt = m.group(2)
        alt = re.sub(r"^a\.k\.a\.\s*", "", alt, flags=re.I)
        for part in (m.group(1), alt):
            if part.strip():
                keys.append(normalize_title(f"{part} ({year})"))
    return list(dict.fromkeys(keys))


def link_by_title(source: Catalog, target: Catalog) -> dict[str, list[str]]:
    """source item id -> target item ids whose title keys match (exact full keys are preferred over
    alternative-title keys; several candidates only when the target itself repeats a title)."""
    full: dict[str, list[str]] = {}
    alts: dict[str, list[str]] = {}
    for it in target:
        keys = title_keys(it.title)
        for n, k in enumerate(keys):
            (full if n == 0 else alts).setdefault(k, []).append(it.id)
    links: dict[str, list[str]] = {}
    for it in source:
        keys = title_keys(it.title)
        if not keys:
            continue
        hit = full.get(keys[0]) or alts.get(keys[0])
        if hit is None:
            for k in keys[1:]:
                hit = full.get(k) or alts.get(k)
                if hit:
                    break
        if hit:
            links[it.id] = sorted(set(hit), key=target.index)
    return links
