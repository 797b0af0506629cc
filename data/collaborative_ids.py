"""Collaborative ids: recursive spectral clustering of the item co-occurrence graph (after Hua et al. 2023,
"How to Index Item IDs for Recommendation Foundation Models", collaborative indexing).

    idmap = build_idmap(catalog, "collaborative", histories=histories, branching=32)
    idmap.code("1")  # '<cf1_4><cf2_17><cf3_2>'

Graph: items co-occur when the same user (a history; for ReDial, a dialogue) holds both. Each node of the tree
splits its items into `branching` clusters by spectral clustering, until a node holds at most `branching` items;
those get a leaf token each (their index in the node). A code is the path of tokens `<cf{depth}_{k}>`: items that
co-occur with the same users share long prefixes. Siblings are either all clusters or all leaves, so no code is a
prefix of another.

Spectral step: for the node's items, B = D_u^-1/2 X D_i^-1/2 with X the binary user x item matrix (Dhillon's
bipartite co-clustering). Its right singular vectors are the eigenvectors of the co-occurrence graph
A = X^T D_u^-1 X (co-occurrences weighted down for very active users), normalized; k-means clusters their rows.

Cold start (documented fallback): items without any interaction sit under a reserved top-level branch
`<cf1_{branching}>` and are clustered below it the same way but by k-means over their item-text embeddings
(data/encoder.py), so cold items that read alike still share prefixes. Items added by `IdMap.extend` join that
branch as new leaves (their interactions arrive later; rebuild the map to place them by co-occurrence).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np
import scipy.sparse as sp

from dlsearch.data.catalog import Catalog
from dlsearch.data.semantic_ids import single_thread_blas

if TYPE_CHECKING:  # ids.py imports this module to plug the scheme in; IdMap is only a type hint here
    from dlsearch.data.ids import IdMap

DEFAULT_BRANCHING = 32
MAX_DEPTH = 12  # guard: a node that cannot be split is chunked by order, so depth stays ~log_b(n)

Histories = Mapping[str, Iterable[Any]]


def interaction_matrix(catalog: Catalog, histories: Histories) -> sp.csr_matrix:
    """Binary users x items matrix (columns in catalog order) from user -> [item_id or (item_id, ts), ...]."""
    rows, cols = [], []
    for u, (user, events) in enumerate(histories.items()):
        for ev in events:
            item_id = ev[0] if isinstance(ev, (tuple, list)) else ev
            if item_id not in catalog:
                raise ValueError(f"history of user {user!r} names item {item_id!r}, which is not in the catalog")
            rows.append(u)
            cols.append(catalog.index(item_id))
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), len(catalog)))
    x.data[:] = 1.0  # repeated interactions count once
    return x


def _kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels; k shrinks to the number of distinct rows (items held by exactly the same users embed
    identically), and all-identical rows get one label (the caller then splits by order)."""
    from sklearn.cluster import KMeans

    from sklearn.exceptions import ConvergenceWarning

    distinct = len(np.unique(x.round(6), axis=0))
    if distinct < 2:
        return np.zeros(len(x), dtype=np.int64)
    with warnings.catch_warnings():  # near-identical rows may still leave a cluster empty; fewer clusters is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=min(k, distinct), n_init=1, max_iter=100, random_state=seed).fit(x)
    return km.labels_.astype(np.int64)


def spectral_embedding(x: sp.csr_matrix, dims: int, seed: int) -> np.ndarray:
    """[n_items, dims] row-normalized embedding of the items (columns of x) from the normalized bipartite graph."""
    x = x[np.asarray(x.sum(axis=1)).ravel() > 0]  # users with no item in this node add nothing
    du = np.asarray(x.sum(axis=1)).ravel()
    di = np.asarray(x.sum(axis=0)).ravel()
    b = sp.diags(1 / np.sqrt(du)) @ x @ sp.diags(1 / np.sqrt(np.maximum(di, 1)))  # [users, items]
    k = min(dims + 1, min(b.shape) - 1)  # ARPACK needs k < min(shape)
    if k < 2:
        return np.zeros((x.shape[1], 1), dtype=np.float64)
    if max(b.shape) <= 300 or k >= min(b.shape) - 1:  # small node (or ARPACK's k limit): dense SVD is cheap
        _, s, vt = np.linalg.svd(b.toarray(), full_matrices=False)
        vt = vt[:k]
    else:
        from scipy.sparse.linalg import svds

        v0 = np.random.default_rng(seed).standard_normal(min(b.shape))
        _, s, vt = svds(b, k=k, v0=v0, random_state=seed)
        vt = vt[np.argsort(-s)]
    emb = (vt[1:] / np.sqrt(np.maximum(di, 1))[None, :]).T  # drop the trivial vector; [items, k-1]
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _split(n: int, labels: np.ndarray, branching: int) -> list[np.ndarray]:
    """Positions per cluster, clusters in order of first member; chunks by order when clustering did not split."""
    groups = [np.flatnonzero(labels == c) for c in dict.fromkeys(labels.tolist())]
    if len(groups) < 2:
        return [a for a in np.array_split(np.arange(n), min(branching, n)) if len(a)]
    return groups


def build_tree(rows: np.ndarray, branching: int, embed: Callable[[np.ndarray, int], np.ndarray], seed: int,
               depth: int = 1, prefix: tuple[int, ...] = ()) -> dict[int, tuple[int, ...]]:
    """Catalog row -> path of cluster / leaf indices, splitting nodes larger than `branching`."""
    if len(rows) <= branching:
        return {int(r): prefix + (k,) for k, r in enumerate(rows)}
    if depth >= MAX_DEPTH:
        groups = [a for a in np.array_split(np.arange(len(rows)), branching) if len(a)]
    else:
        labels = _kmeans_labels(embed(rows, seed + depth), branching, seed + depth)
        groups = _split(len(rows), labels, branching)
    out: dict[int, tuple[int, ...]] = {}
    for k, pos in enumerate(groups):
        out.update(build_tree(rows[pos], branching, embed, seed, depth + 1, prefix + (k,)))
    return out


def _tokens(path: tuple[int, ...]) -> str:
    return "".join(f"<cf{d + 1}_{k}>" for d, k in enumerate(path))


def _special(codes: Iterable[str]) -> list[str]:
    toks = {t + ">" for c in codes for t in c.split(">") if t}
    return sorted(toks, key=lambda t: (int(t[3:t.index("_")]), int(t[t.index("_") + 1:-1])))


def build_collaborative(catalog: Catalog, seed: int, *, histories: Histories | None = None, branching: int = DEFAULT_BRANCHING,
                        cache_dir: Any = None, embeddings: np.ndarray | None = None, **_: Any) -> tuple[dict[str, str], list[str]]:
    if histories is None:
        raise ValueError("the collaborative id scheme needs histories=user -> [item ids] (e.g. MovieLens ratings)")
    if branching < 2:
        raise ValueError(f"branching must be >= 2, got {branching}")
    x = interaction_matrix(catalog, histories).tocsc()
    warm = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
    cold = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() == 0)

    def graph_embed(rows: np.ndarray, s: int) -> np.ndarray:
        return spectral_embedding(x[:, rows].tocsr(), branching, s)

    with single_thread_blas():
        paths = build_tree(warm, branching, graph_embed, seed)
    if len(cold):
        from dlsearch.data.semantic_ids import item_embeddings

        emb = item_embeddings(catalog, cache_dir=cache_dir, embeddings=embeddings) if embeddings is not None else None
        if emb is None:
            cold_emb = item_embeddings(catalog.subset([catalog.ids[r] for r in cold]), cache_dir=cache_dir)
            emb = np.zeros((len(catalog), cold_emb.shape[1]), dtype=np.float32)
            emb[cold] = cold_emb
        with single_thread_blas():
            paths.update(build_tree(cold, branching, lambda rows, s: emb[rows], seed, depth=2, prefix=(branching,)))
    ids = catalog.ids
    codes = {ids[r]: _tokens(paths[r]) for r in range(len(catalog))}
    return codes, _special(codes.values())


def extend_collaborative(idmap: IdMap, catalog: Catalog, new_ids: list[str], seed: int, *, branching: int = DEFAULT_BRANCHING,
                         **_: Any) -> tuple[dict[str, str], list[str]]:
    cold_prefix = f"<cf1_{branching}>"
    used = [int(c[len(cold_prefix):].split(">")[0].split("_")[1]) for c in idmap.codes.values() if c.startswith(cold_prefix)]
    start = max(used, default=-1) + 1
    added = {i: f"{cold_prefix}<cf2_{start + n}>" for n, i in enumerate(new_ids)}
    return added, _special(list(idmap.codes.values()) + list(added.values()))
