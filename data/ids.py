"""Item-id schemes behind one interface: `build_idmap(catalog, scheme, seed=...)` -> IdMap.

An IdMap maps every item id to a text form ("code") the model emits, and back. It is saved as JSON with the
catalog's content hash and a version; `extend` adds items without changing any existing code (new version).

Schemes:
  atomic      the catalog's native ids, as text ("<id>" special tokens are not used: ids tokenize as digits).
  sequential  0..N-1 in catalog order.
  random      fixed-length random codes over a small alphabet, deterministic under the seed.
  title       the display title as the catalog writes it (case and year kept, whitespace collapsed), the GENRE way;
              titles whose normalized form repeats get " [2]", " [3]" ... (scheme version 2; version 1 maps, whose
              codes were the normalized titles, still load and extend as they were built). The normalized form is
              used only for matching: IdMap.lookup accepts "the matrix (1999)" for "The Matrix (1999)".
  semantic    residual k-means over item-text embeddings, codes as special tokens "<a_12><b_3><c_40>"
              (data/semantic_ids.py; inputs: cache_dir or embeddings).
  collaborative  recursive spectral clustering of the co-occurrence graph of histories (Hua et al. 2023),
              codes "<cf1_4><cf2_17>..." (data/collaborative_ids.py; input: histories).

    idmap = build_idmap(catalog, "semantic", seed=0, cache_dir=".cache/embeddings")
    bigger = idmap.extend(catalog_with_new_items, cache_dir=".cache/embeddings")  # version 2, old codes kept
"""

from __future__ import annotations

import difflib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlsearch.data.catalog import Catalog, normalize_title

TITLE_SCHEME_VERSION = 2  # 1: codes were normalize_title(title); 2: display titles (GENRE)

IDMAP_FORMAT_VERSION = 1
SCHEMES = ("atomic", "sequential", "random", "title", "semantic", "collaborative")


class IdMapError(ValueError):
    """An id map that does not fit its catalog, or a code that maps to no item."""


@dataclass
class IdMap:
    scheme: str
    codes: dict[str, str]  # item id -> code text, in catalog order
    catalog_hash: str
    version: int = 1
    parent_hash: str | None = None  # catalog hash this map extends, if any
    special_tokens: list[str] = field(default_factory=list)  # tokens the tokenizer must add (semantic codes)
    params: dict[str, Any] = field(default_factory=dict)  # scheme parameters (seed, levels, ...)
    _inverse: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _normalized: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        inv: dict[str, str] = {}
        for item_id, code in self.codes.items():
            if code in inv:
                raise IdMapError(f"code {code!r} maps to two items: {inv[code]!r} and {item_id!r}")
            inv[code] = item_id
        self._inverse = inv
        if self.scheme == "title":  # matching form -> item; the first item wins (duplicates carry a " [n]" suffix)
            self._normalized = {}
            for code, item_id in inv.items():
                self._normalized.setdefault(normalize_title(code), item_id)

    def __len__(self) -> int:
        return len(self.codes)

    def code(self, item_id: str) -> str:
        try:
            return self.codes[item_id]
        except KeyError:
            raise IdMapError(f"item {item_id!r} has no code in this {self.scheme} id map") from None

    def item(self, code: str) -> str:
        """The item id for a code; IdMapError when the code names no item (e.g. an unconstrained generation)."""
        found = self.lookup(code)
        if found is None:
            raise IdMapError(f"code {code!r} matches no item")
        return found

    def lookup(self, code: str) -> str | None:
        """The item id for a code, or None; title codes also match in normalized form (case, spacing, articles)."""
        found = self._inverse.get(code.strip())
        if found is None and self._normalized:
            found = self._normalized.get(normalize_title(code))
        return found

    def check_catalog(self, catalog: Catalog) -> None:
        """Refuse a catalog this map was not built for (hash differs and ids are not all covered)."""
        h = catalog.content_hash()
        if h == self.catalog_hash:
            return
        missing = [i for i in catalog.ids if i not in self.codes]
        raise IdMapError(
            f"id map was built for catalog {self.catalog_hash[:12]}, this catalog is {h[:12]}"
            + (f" ({len(missing)} items without a code, e.g. {missing[:3]}); extend the map" if missing else "")
        )

    def extend(self, new_catalog: Catalog, **inputs: Any) -> "IdMap":
        """A new version of this map for a catalog that adds items: every old code is unchanged, new items get
        new codes from the same scheme. `inputs` are what the scheme needs besides the catalog (semantic:
        cache_dir or embeddings; collaborative: histories).

        Raises:
            IdMapError: the new catalog lacks items of this map (removing items is not an extension).
        """
        _load_optional_schemes()
        removed = [i for i in self.codes if i not in new_catalog]
        if removed:
            raise IdMapError(f"{len(removed)} item(s) of this id map are not in the new catalog, e.g. {removed[:3]}; "
                             "an extension may only add items")
        new_ids = [i for i in new_catalog.ids if i not in self.codes]
        seed = int(self.params.get("seed", 0))
        added, special = _EXTENDERS[self.scheme](self, new_catalog, new_ids, seed, **{**{k: v for k, v in self.params.items() if k != "seed"}, **inputs})
        codes = {i: self.codes[i] if i in self.codes else added[i] for i in new_catalog.ids}
        return IdMap(scheme=self.scheme, codes=codes, catalog_hash=new_catalog.content_hash(), version=self.version + 1,
                     parent_hash=self.catalog_hash, special_tokens=special or list(self.special_tokens),
                     params=dict(self.params))

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": IDMAP_FORMAT_VERSION,
            "scheme": self.scheme,
            "catalog_hash": self.catalog_hash,
            "version": self.version,
            "parent_hash": self.parent_hash,
            "special_tokens": self.special_tokens,
            "params": self.params,
            "codes": self.codes,
        }

    def save(self, path: str | Path) -> None:
        from dlsearch.data.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> "IdMap":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IdMapError(f"{path}: cannot read id map: {e}") from None
        missing = {"scheme", "catalog_hash", "codes"} - set(d)
        if missing:
            raise IdMapError(f"{path}: not an id map, missing field(s) {sorted(missing)}")
        if d.get("format_version", 1) > IDMAP_FORMAT_VERSION:
            raise IdMapError(f"{path}: id map format {d['format_version']} is newer than this package ({IDMAP_FORMAT_VERSION})")
        return cls(
            scheme=d["scheme"], codes=d["codes"], catalog_hash=d["catalog_hash"], version=d.get("version", 1),
            parent_hash=d.get("parent_hash"), special_tokens=d.get("special_tokens", []), params=d.get("params", {}),
        )


# --- simple schemes ---------------------------------------------------------------------------------------------

def _atomic(catalog: Catalog, seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    return {it.id: it.id for it in catalog}, []


def _sequential(catalog: Catalog, seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    return {it.id: str(n) for n, it in enumerate(catalog)}, []


RANDOM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: they read as digits


def _random(catalog: Catalog, seed: int, *, length: int | None = None, **_: Any) -> tuple[dict[str, str], list[str]]:
    n, a = len(catalog), len(RANDOM_ALPHABET)
    if length is None:  # shortest length whose code space is >= 10x the catalog: few draws collide
        length = 1
        while a**length < 10 * n:
            length += 1
    if a**length < n:
        raise ValueError(f"random ids of length {length} over {a} symbols cannot cover {n} items")
    return _draw_codes(np.random.default_rng(seed), [it.id for it in catalog], length, set()), []


def _draw_codes(rng: np.random.Generator, ids: list[str], length: int, used: set[str]) -> dict[str, str]:
    """One code of `length` random letters per id, redrawn until unseen; `used` grows with every code drawn."""
    out: dict[str, str] = {}
    for i in ids:
        while True:
            c = "".join(RANDOM_ALPHABET[k] for k in rng.integers(0, len(RANDOM_ALPHABET), size=length))
            if c not in used:
                break
        used.add(c)
        out[i] = c
    return out


def display_title(title: str) -> str:
    """The title as the model writes it under the title scheme: as displayed, with runs of whitespace collapsed
    (" (2015)" -> "(2015)", "Police Academy  (1984)" -> "Police Academy (1984)")."""
    return " ".join(title.split())


def _title(catalog: Catalog, seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    return _title_codes([(it.id, it.title) for it in catalog], set(), {}, version=TITLE_SCHEME_VERSION), []


def _title_codes(items: list[tuple[str, str]], used: set[str], seen: dict[str, int], *, version: int) -> dict[str, str]:
    """Codes for (item id, title) pairs in order, unique against `used`. Two titles are duplicates when their
    normalized forms are equal; the n-th gets " [n]". Version 1 wrote the normalized form itself."""
    codes: dict[str, str] = {}
    used_norm = {normalize_title(c) for c in used}
    for item_id, title in items:
        key = normalize_title(title)
        base = display_title(title) if version >= 2 else key
        seen[key] = seen.get(key, 0) + 1
        code = base if seen[key] == 1 else f"{base} [{seen[key]}]"
        while code in used or (version >= 2 and normalize_title(code) in used_norm):
            seen[key] += 1  # a literal "x [2]" title, or one written before this call
            code = f"{base} [{seen[key]}]"
        used.add(code)
        used_norm.add(normalize_title(code))
        codes[item_id] = code
    return codes


# --- extending a map: old codes fixed, new items get fresh codes -----------------------------------------------

def _extend_atomic(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    return {i: i for i in new_ids}, []


def _extend_sequential(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    start = max((int(c) for c in idmap.codes.values()), default=-1) + 1
    return {i: str(start + n) for n, i in enumerate(new_ids)}, []


def _extend_random(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, **_: Any) -> tuple[dict[str, str], list[str]]:
    length = len(next(iter(idmap.codes.values())))
    a = len(RANDOM_ALPHABET)
    if a**length < len(idmap.codes) + len(new_ids):
        raise IdMapError(f"random ids of length {length} cannot cover {len(idmap.codes) + len(new_ids)} items; rebuild the map")
    rng = np.random.default_rng([seed, idmap.version])  # a new stream per version: never replays old draws
    return _draw_codes(rng, new_ids, length, set(idmap.codes.values())), []


def _extend_title(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, **params: Any) -> tuple[dict[str, str], list[str]]:
    version = int(idmap.params.get("scheme_version", 1))  # a map keeps the version it was built with
    used = set(idmap.codes.values())
    return _title_codes([(i, catalog[i].title) for i in new_ids], used, {}, version=version), []


Builder = Callable[..., tuple[dict[str, str], list[str]]]
_BUILDERS: dict[str, Builder] = {"atomic": _atomic, "sequential": _sequential, "random": _random, "title": _title}
_EXTENDERS: dict[str, Builder] = {
    "atomic": _extend_atomic, "sequential": _extend_sequential, "random": _extend_random, "title": _extend_title,
}
# Inputs a scheme consumes that are not parameters of the map: never written into idmap.json params.
INPUT_KEYS = ("histories", "embeddings", "cache_dir", "encoder")


def register_scheme(name: str, builder: Builder, extender: Builder) -> None:
    """Plug a scheme's builder and extender in (semantic and collaborative are plugged in by _load_optional_schemes).

    builder(catalog, seed, **params) -> (codes, special_tokens);
    extender(idmap, new_catalog, new_ids, seed, **params) -> (codes of new_ids, special_tokens of the new map).
    """
    _BUILDERS[name] = builder
    _EXTENDERS[name] = extender


def build_idmap(catalog: Catalog, scheme: str, *, seed: int = 0, **params: Any) -> IdMap:
    """Build an id map for every item of the catalog with the named scheme (see module docstring)."""
    _load_optional_schemes()
    if scheme not in _BUILDERS:
        raise ValueError(f"unknown id scheme {scheme!r}; choose one of {list(SCHEMES)}")
    _check_params(scheme, params)
    codes, special = _BUILDERS[scheme](catalog, seed, **params)
    saved = {k: v for k, v in params.items() if k not in INPUT_KEYS}
    unsaved = [k for k, v in saved.items() if not _jsonable(v)]
    if unsaved:
        raise ValueError(f"id scheme parameter(s) {unsaved} are not JSON values; pass plain numbers/strings")
    return IdMap(scheme=scheme, codes=codes, catalog_hash=catalog.content_hash(), special_tokens=special,
                 params={"seed": seed, **_defaults(scheme), **saved})


def _check_params(scheme: str, params: dict[str, Any]) -> None:
    """Refuse a parameter the scheme's builder does not name (a misspelling would otherwise be swallowed by its
    **kwargs and saved into the map's params as if it had been used). Inputs (INPUT_KEYS) pass: a recipe may carry
    a cache_dir while a --set switches the scheme to one that does not need it."""
    sig = inspect.signature(_BUILDERS[scheme])
    known = [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in params:
        if key not in known and key not in INPUT_KEYS:  # inputs (cache_dir, histories...) are not saved params
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"id scheme {scheme!r} has no parameter '{key}'{hint} "
                             f"(valid: {', '.join(known) or 'none'})")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def _defaults(scheme: str) -> dict[str, Any]:
    """Scheme parameters with defaults, recorded so a saved map says how it was built (and extends the same way)."""
    from dlsearch.data import collaborative_ids, semantic_ids

    if scheme == "semantic":
        return {"levels": semantic_ids.DEFAULT_LEVELS, "codebook_size": semantic_ids.DEFAULT_CODEBOOK_SIZE, "unique_last_level": True}
    if scheme == "collaborative":
        return {"branching": collaborative_ids.DEFAULT_BRANCHING}
    if scheme == "title":
        return {"scheme_version": TITLE_SCHEME_VERSION}
    return {}


def _load_optional_schemes() -> None:
    # Imported at call time, not at the top: they pull numpy/scipy clustering code most commands never need.
    # They do not import this module at run time (IdMap is only their type hint), so there is no cycle.
    from dlsearch.data import collaborative_ids, semantic_ids

    _BUILDERS.setdefault("semantic", semantic_ids.build_semantic)
    _EXTENDERS.setdefault("semantic", semantic_ids.extend_semantic)
    _BUILDERS.setdefault("collaborative", collaborative_ids.build_collaborative)
    _EXTENDERS.setdefault("collaborative", collaborative_ids.extend_collaborative)
