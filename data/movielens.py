"""MovieLens ml-latest-small: movies as a catalog (genres + tags as concepts), ratings as timestamped histories.

    from dlsearch.data.movielens import load_movielens
    catalog, histories = load_movielens()   # 9,742 items; histories["1"] = [("804", 964980499), ...]

Cold-start items (no concepts, or no ratings) are kept and flagged in `meta["cold_start"]`
(a list of reasons: "no_concepts", "no_ratings"), never dropped.
"""

from __future__ import annotations

import csv
from pathlib import Path

from dlsearch.data.catalog import Catalog, CatalogError, Item

DEFAULT_ROOT = Path(__file__).resolve().parent / "datasets" / "movielens-latest-small"
NO_GENRES = "(no genres listed)"

Histories = dict[str, list[tuple[str, int]]]


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(1-based data row, record) for every row; missing columns name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a MovieLens folder with movies.csv, ratings.csv)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CatalogError(f"missing column(s) {missing}", path=str(path), line=1, field=missing[0])
        return list(enumerate(reader, start=1))


def _distinct_tags(rows: list[tuple[int, dict[str, str]]]) -> dict[str, list[str]]:
    """movieId -> tags, case-insensitively distinct, most used first (ties: first use), original spelling kept."""
    counts: dict[str, dict[str, list]] = {}  # movie -> lower tag -> [count, first row, spelling]
    for n, r in rows:
        tag = " ".join(r["tag"].split())
        if not tag:
            continue
        slot = counts.setdefault(r["movieId"], {}).setdefault(tag.lower(), [0, n, tag])
        slot[0] += 1
    return {m: [s[2] for s in sorted(d.values(), key=lambda s: (-s[0], s[1]))] for m, d in counts.items()}


def load_histories(root: str | Path | None = None) -> Histories:
    """ratings.csv as user_id -> [(movie_id, timestamp)], sorted by (timestamp, movie_id)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    hist: Histories = {}
    for _, r in _rows(root / "ratings.csv", ("userId", "movieId", "timestamp")):
        hist.setdefault(r["userId"], []).append((r["movieId"], int(r["timestamp"])))
    for events in hist.values():
        events.sort(key=lambda e: (e[1], e[0]))
    return hist


def load_movielens(root: str | Path | None = None) -> tuple[Catalog, Histories]:
    """Load MovieLens (ml-latest-small layout) from `root` (default: the bundled copy).

    Returns:
        (catalog, histories): items with id = movieId, the original title, concepts = genres (without
        "(no genres listed)") followed by the distinct tags; meta has genres, tags, imdbId/tmdbId, n_ratings and
        cold_start. histories: user_id -> [(item_id, timestamp)] sorted by time.
    Raises:
        FileNotFoundError, CatalogError (file, row, field) for malformed files.
    """
    root = Path(root) if root is not None else DEFAULT_ROOT
    movies = _rows(root / "movies.csv", ("movieId", "title", "genres"))
    tags = _distinct_tags(_rows(root / "tags.csv", ("movieId", "tag"))) if (root / "tags.csv").is_file() else {}
    links = {r["movieId"]: r for _, r in _rows(root / "links.csv", ("movieId",))} if (root / "links.csv").is_file() else {}
    histories = load_histories(root)
    n_ratings: dict[str, int] = {}
    for events in histories.values():
        for movie_id, _ in events:
            n_ratings[movie_id] = n_ratings.get(movie_id, 0) + 1

    items, rows = [], []
    for n, r in movies:
        genres = [g for g in r["genres"].split("|") if g and g != NO_GENRES]
        movie_tags = [t for t in tags.get(r["movieId"], []) if t.lower() not in {g.lower() for g in genres}]
        cold = (["no_concepts"] if not genres and not movie_tags else []) + (["no_ratings"] if r["movieId"] not in n_ratings else [])
        meta = {"genres": genres, "tags": movie_tags, "n_ratings": n_ratings.get(r["movieId"], 0), "cold_start": cold}
        if r["movieId"] in links:
            meta.update(imdbId=links[r["movieId"]].get("imdbId", ""), tmdbId=links[r["movieId"]].get("tmdbId", ""))
        if not r["title"].strip():
            raise CatalogError("empty or whitespace-only value", path=str(root / "movies.csv"), line=n, field="title", unit="row")
        items.append(Item(id=r["movieId"], title=r["title"], concepts=tuple(genres + movie_tags), meta=meta))
        rows.append(n)
    catalog = Catalog(items, source=str(root / "movies.csv"), lines=rows, unit="row")
    unknown = sorted({m for ev in histories.values() for m, _ in ev} - set(catalog.ids))
    if unknown:
        raise CatalogError(f"{len(unknown)} rated movieId(s) not in movies.csv, e.g. {unknown[:3]}", path=str(root / "ratings.csv"), field="movieId")
    return catalog, histories
