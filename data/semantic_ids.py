"""Semantic ids: residual k-means over item-text embeddings (the offline sentence encoder, data/encoder.py).

    idmap = build_idmap(catalog, "semantic", levels=3, codebook_size=256, cache_dir=".cache/embeddings")
    idmap.code("1")  # '<a_12><b_3><c_40>'

Level 1 clusters the embeddings into `codebook_size` centroids; each next level clusters the residuals
(embedding minus the centroids chosen so far) with its own codebook, as in RQ-VAE / TIGER without the learned
encoder. Items whose level codes coincide get one more token `<d_k>` (k = 0, 1, ... in catalog order); items with a
unique path do not, so codes stay short. Every group member gets a `<d_k>`, so no code is a prefix of another.
Deterministic under the seed (k-means++ init and Lloyd iterations seeded; ties broken by catalog order).

Extending a map (new items): the centroids are re-derived from the old items (mean residual of the items under
each code: the k-means fixed point), new items take the nearest centroid per level, and a `<d_k>` with the next
free k when their path is taken. Old codes never change, so an old code without `<d_k>` may become a prefix of a
new one; decoders end codes at EOS, which keeps them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dlsearch.data.catalog import Catalog

if TYPE_CHECKING:  # ids.py imports this module to plug the scheme in; IdMap is only a type hint here
    from dlsearch.data.ids import IdMap

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
DEFAULT_LEVELS = 3
DEFAULT_CODEBOOK_SIZE = 256


def item_embeddings(catalog: Catalog, *, cache_dir: Any = None, embeddings: np.ndarray | None = None) -> np.ndarray:
    """[n_items, d] float32 in catalog order: the given matrix (shape-checked) or the cached encoder output."""
    if embeddings is not None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(catalog):
            raise ValueError(f"embeddings must be [n_items={len(catalog)}, d], got {emb.shape}")
        if emb.dtype != np.float32:
            raise TypeError(f"embeddings must be float32, got {emb.dtype}")
        return emb
    from dlsearch.data.encoder import encode_texts, item_text

    return encode_texts([item_text(it) for it in catalog], cache_dir=cache_dir, show_progress=len(catalog) > 1000)


def single_thread_blas() -> Any:
    """One BLAS/OpenMP thread: these builds are many mid-sized k-means and SVD calls, and on a shared machine
    spinning BLAS threads cost more than they save (measured: ~1.5x less CPU on MovieLens). Codes are identical."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n], centroids [k, d]) by sklearn's k-means (k-means++ init, one run, seeded)."""
    from sklearn.cluster import KMeans

    k = min(k, len(x))
    km = KMeans(n_clusters=k, n_init=1, max_iter=iters, random_state=seed).fit(x)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def residual_kmeans(emb: np.ndarray, levels: int, codebook_size: int, seed: int, iters: int = 100,
                    unique_last_level: bool = True) -> np.ndarray:
    """Codes [n, levels] (int64): level l clusters the residual left by levels < l.

    unique_last_level: the last level gives the items that share every earlier code DISTINCT codes (a minimum-cost
    assignment to the last codebook's centroids, scipy's linear_sum_assignment), instead of each item's nearest
    centroid. Near-duplicate texts (products sharing brand and product-line words) otherwise land on the same full
    path: measured 30 % of a product catalog's items colliding, which then need a 4th token and memorize worse."""
    residual = emb.astype(np.float64)  # [n, d]
    codes = np.zeros((len(emb), levels), dtype=np.int64)
    for level in range(levels):
        labels, centroids = _kmeans(residual, codebook_size, seed + level, iters)
        if unique_last_level and level == levels - 1:
            labels = _distinct_within_prefix(residual, centroids, codes[:, :level], labels)
        codes[:, level] = labels
        residual = residual - centroids[labels]
    return codes


def _distinct_within_prefix(residual: np.ndarray, centroids: np.ndarray, prefixes: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per group of items with equal earlier codes: distinct last-level codes at minimum total squared distance.
    A group larger than the codebook keeps the nearest centroids (its items are then disambiguated)."""
    from scipy.optimize import linear_sum_assignment

    labels = nearest.copy()
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, prefix in enumerate(map(tuple, prefixes.tolist())):
        groups.setdefault(prefix, []).append(row)
    for rows in groups.values():
        if len(rows) < 2 or len(rows) > len(centroids) or len(set(nearest[rows].tolist())) == len(rows):
            continue
        cost = ((residual[rows][:, None, :] - centroids[None, :, :]) ** 2).sum(-1)  # [group, k]
        r, c = linear_sum_assignment(cost)
        labels[np.asarray(rows)[r]] = c
    return labels


def _tokens(path: tuple[int, ...]) -> str:
    return "".join(f"<{LEVEL_LETTERS[lvl]}_{c}>" for lvl, c in enumerate(path))


def _disambiguate(paths: list[tuple[int, ...]], levels: int, taken: dict[tuple[int, ...], int] | None = None) -> list[str]:
    """Code text per item; a `<d_k>` only for paths shared by several items (or already taken: `taken` counts)."""
    counts: dict[tuple[int, ...], int] = {}
    for p in paths:
        counts[p] = counts.get(p, 0) + 1
    next_k = dict(taken or {})
    letter = LEVEL_LETTERS[levels]
    out = []
    for p in paths:
        if counts[p] == 1 and p not in next_k:
            out.append(_tokens(p))
            continue
        k = next_k.get(p, 0)
        next_k[p] = k + 1
        out.append(_tokens(p) + f"<{letter}_{k}>")
    return out


def special_tokens(levels: int, codebook_size: int, max_disambiguation: int) -> list[str]:
    """Every level token of the codebooks (so extending never needs new level tokens) + the used `<d_k>`."""
    toks = [f"<{LEVEL_LETTERS[lvl]}_{c}>" for lvl in range(levels) for c in range(codebook_size)]
    return toks + [f"<{LEVEL_LETTERS[levels]}_{k}>" for k in range(max_disambiguation)]


def _check(levels: int, codebook_size: int) -> None:
    if not 1 <= levels < len(LEVEL_LETTERS):
        raise ValueError(f"levels must be in 1..{len(LEVEL_LETTERS) - 1}, got {levels}")
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")


def build_semantic(catalog: Catalog, seed: int, *, levels: int = DEFAULT_LEVELS, codebook_size: int = DEFAULT_CODEBOOK_SIZE,
                   cache_dir: Any = None, embeddings: np.ndarray | None = None, iters: int = 100,
                   unique_last_level: bool = True, **_: Any) -> tuple[dict[str, str], list[str]]:
    _check(levels, codebook_size)
    emb = item_embeddings(catalog, cache_dir=cache_dir, embeddings=embeddings)
    with single_thread_blas():
        codes = residual_kmeans(emb, levels, codebook_size, seed, iters, unique_last_level=unique_last_level)
    texts = _disambiguate([tuple(int(c) for c in row) for row in codes], levels)
    return dict(zip(catalog.ids, texts)), special_tokens(levels, codebook_size, _max_d(texts, levels))


def _max_d(texts: list[str], levels: int) -> int:
    letter = LEVEL_LETTERS[levels]
    ks = [int(t.rsplit(f"<{letter}_", 1)[1][:-1]) for t in texts if f"<{letter}_" in t]
    return max(ks) + 1 if ks else 0


def parse_code(code: str) -> list[tuple[str, int]]:
    """'<a_12><b_3>' -> [('a', 12), ('b', 3)]."""
    parts = code.strip()[1:-1].split("><") if code.strip() else []
    out = []
    for p in parts:
        letter, _, num = p.partition("_")
        out.append((letter, int(num)))
    return out


def extend_semantic(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, *, cache_dir: Any = None,
                    embeddings: np.ndarray | None = None, **_: Any) -> tuple[dict[str, str], list[str]]:
    levels, size = int(idmap.params.get("levels", DEFAULT_LEVELS)), int(idmap.params.get("codebook_size", DEFAULT_CODEBOOK_SIZE))
    emb = item_embeddings(catalog, cache_dir=cache_dir, embeddings=embeddings).astype(np.float64)
    old_rows = [catalog.index(i) for i in idmap.codes]
    old_paths = np.array([[c for _, c in parse_code(idmap.codes[i])[:levels]] for i in idmap.codes])  # [n_old, levels]
    new_rows = [catalog.index(i) for i in new_ids]
    residual_old, residual_new = emb[old_rows], emb[new_rows]
    new_paths = np.zeros((len(new_ids), levels), dtype=np.int64)
    for level in range(levels):
        labels = old_paths[:, level]
        centroids = np.full((size, emb.shape[1]), np.inf)
        for c in np.unique(labels):
            centroids[c] = residual_old[labels == c].mean(axis=0)
        dist = ((residual_new[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)  # [n_new, size]
        new_paths[:, level] = dist.argmin(axis=1)
        residual_old = residual_old - centroids[labels]
        residual_new = residual_new - centroids[new_paths[:, level]]
    taken: dict[tuple[int, ...], int] = {}
    for code in idmap.codes.values():
        parts = parse_code(code)
        path = tuple(c for _, c in parts[:levels])
        taken[path] = max(taken.get(path, 0), parts[levels][1] + 1 if len(parts) > levels else 1)
    texts = _disambiguate([tuple(int(c) for c in p) for p in new_paths], levels, taken)
    all_texts = list(idmap.codes.values()) + texts
    return dict(zip(new_ids, texts)), special_tokens(levels, size, _max_d(all_texts, levels))


def semantic_stats(idmap: IdMap) -> dict[str, Any]:
    """Per level: utilization (distinct codes used / codebook size) and perplexity; the items that needed `<d_k>`
    (every member of a colliding group), the number of such groups ("collisions resolved"), the largest group."""
    levels, size = int(idmap.params.get("levels", DEFAULT_LEVELS)), int(idmap.params.get("codebook_size", DEFAULT_CODEBOOK_SIZE))
    parsed = [parse_code(c) for c in idmap.codes.values()]
    util = {LEVEL_LETTERS[l]: len({p[l][1] for p in parsed}) / size for l in range(levels)}
    perplexity = {}  # exp(entropy) of the code distribution per level: how evenly the used codes are filled
    for l in range(levels):
        counts = np.unique([p[l][1] for p in parsed], return_counts=True)[1] if parsed else np.ones(1)
        prob = counts / counts.sum()
        perplexity[LEVEL_LETTERS[l]] = round(float(np.exp(-(prob * np.log(prob)).sum())), 1)
    need = sum(1 for p in parsed if len(p) > levels)
    groups = len({tuple(x[1] for x in p[:levels]) for p in parsed if len(p) > levels})
    return {"items": len(parsed), "levels": levels, "codebook_size": size, "utilization": util, "perplexity": perplexity,
            # items whose level codes collide with another item's, BEFORE the <d_k> disambiguation token
            "collision_rate": round(need / max(1, len(parsed)), 4),
            "disambiguated_items": need, "disambiguated_fraction": need / max(1, len(parsed)),
            "collision_groups": groups, "max_group_size": _max_d([idmap.codes[i] for i in idmap.codes], levels)}
