"""Approximate nearest-neighbour search over L2-normalised vectors (FAISS, inner product = cosine).

    index = build_ann(vectors, "HNSW32", params={"efSearch": 128}, meta={"catalog_hash": ...})
    scores, rows = index.search(query_vectors, k=10)        # the search shape: catalog rows, -inf / -1 padding
    index.save("runs/redial/index/concept"); AnnIndex.load("runs/redial/index/concept")

The factory string picks the structure, as in `faiss.index_factory`: "Flat" (exact; small catalogs), "HNSW32"
(graph; fast, memory ~ d*4 + M*8 bytes/vector), "IVF4096,Flat" / "IVF4096,PQ48" (inverted lists; PQ compresses to
48 bytes/vector at some recall cost). "auto" = Flat below 50k items, HNSW32 above. Saved as `index.faiss`
(faiss.write_index, no pickle), `rows.safetensors` (position -> catalog row) and `manifest.json` (factory, dim,
search params, free metadata such as catalog hash, item ids and encoder fingerprint). GPU faiss is used when
present (`faiss.get_num_gpus() > 0`) for the structures it supports (not HNSW).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from safetensors.numpy import load_file, save_file

from dlsearch.retrieval.shape import check_k, check_result

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
AUTO_FLAT_MAX = 50_000  # exact Flat search of 50k x 384 is ~2 ms/query on one core; beyond that use a graph
SEARCH_PARAMS = ("efSearch", "nprobe", "ht", "max_codes")


def normalize(vectors: np.ndarray, *, name: str = "vectors") -> np.ndarray:
    """Check [n, d] float32 and return an L2-normalised C-contiguous copy (zero rows stay zero)."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"{name} must be a 2-D numpy array [n, d], got {getattr(vectors, 'shape', type(vectors))}")
    if vectors.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {vectors.dtype} (convert explicitly with .astype(np.float32))")
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def resolve_factory(factory: str, n: int) -> str:
    if factory == "auto":
        return "Flat" if n < AUTO_FLAT_MAX else "HNSW32"
    return factory


def _set_params(index: faiss.Index, params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - set(SEARCH_PARAMS))
    if unknown:
        raise ValueError(f"unknown ANN search parameter(s) {unknown}; allowed: {list(SEARCH_PARAMS)}")
    ps = faiss.GpuParameterSpace() if _on_gpu(index) else faiss.ParameterSpace()
    for key, value in params.items():
        ps.set_index_parameter(index, key, value)


def _on_gpu(index: faiss.Index) -> bool:
    return hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex)


class AnnIndex:
    """A FAISS index whose positions map to catalog rows."""

    def __init__(self, index: faiss.Index, rows: np.ndarray, manifest: dict[str, Any]):
        assert rows.dtype == np.int64 and rows.shape == (index.ntotal,), (rows.dtype, rows.shape, index.ntotal)
        self.index, self.rows, self.manifest = index, rows, manifest

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def set_search_params(self, **params: Any) -> None:
        """e.g. efSearch=128 (HNSW) or nprobe=32 (IVF); kept in the manifest when saved."""
        _set_params(self.index, params)
        self.manifest["search_params"] = {**self.manifest.get("search_params", {}), **params}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k catalog rows by cosine similarity.

        Args:
            queries: float32 [n, d] (normalised here).
            k: results per query.
        Returns:
            (scores float32 [n, k], rows int64 [n, k]), best first, padded with -inf / -1.
        """
        k = check_k(k)
        q = normalize(queries, name="queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, index has dim {self.dim}")
        dist, labels = self.index.search(q, k)  # [n, k] each; labels -1 where fewer than k found
        labels = labels.astype(np.int64)
        found = labels >= 0
        rows = np.where(found, self.rows[np.where(found, labels, 0)], -1).astype(np.int64)
        scores = np.where(found, dist, -np.inf).astype(np.float32)
        check_result(scores, rows, q.shape[0], k)
        return scores, rows

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cpu = faiss.index_gpu_to_cpu(self.index) if _on_gpu(self.index) else self.index
        faiss.write_index(cpu, str(out / "index.faiss"))
        save_file({"rows": self.rows}, str(out / "rows.safetensors"))
        (out / MANIFEST).write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False))
        return out

    @classmethod
    def load(cls, index_dir: str | Path, *, use_gpu: bool | str = "auto") -> "AnnIndex":
        d = Path(index_dir)
        for name in ("index.faiss", "rows.safetensors", MANIFEST):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d}: missing {name}; build it with `dlsearch index build`")
        manifest = json.loads((d / MANIFEST).read_text())
        index = faiss.read_index(str(d / "index.faiss"))
        index = _maybe_gpu(index, manifest["factory"], use_gpu)
        if manifest.get("search_params"):
            _set_params(index, manifest["search_params"])
        return cls(index, load_file(str(d / "rows.safetensors"))["rows"], manifest)


def _maybe_gpu(index: faiss.Index, factory: str, use_gpu: bool | str) -> faiss.Index:
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is True and n_gpus == 0:
        raise ValueError("use_gpu=True but faiss sees no GPU (faiss-cpu installed, or no device)")
    if use_gpu and n_gpus > 0 and "HNSW" not in factory:  # GPU faiss has no HNSW; keep those on CPU
        log.info("moving %s index to %d GPU(s)", factory, n_gpus)
        return faiss.index_cpu_to_all_gpus(index)
    return index


def build_ann(
    vectors: np.ndarray,
    factory: str = "auto",
    *,
    rows: np.ndarray | None = None,
    params: dict[str, Any] | None = None,
    train_size: int | None = None,
    seed: int = 0,
    use_gpu: bool | str = "auto",
    meta: dict[str, Any] | None = None,
) -> AnnIndex:
    """Build an inner-product index over L2-normalised `vectors`.

    Args:
        vectors: float32 [n, d] item vectors (normalised here).
        factory: faiss index factory string, or "auto".
        rows: int64 [n] catalog row of each vector (default 0..n-1).
        params: search parameters (efSearch, nprobe, ...).
        train_size: vectors sampled (seeded) to train IVF/PQ (default: all, capped at 256 per centroid by faiss).
        seed: sampling seed.
        use_gpu: "auto" (when faiss sees a GPU), True (require one) or False.
        meta: extra manifest fields (catalog_hash, item_ids, encoder, ...).
    Raises:
        ValueError: bad shapes, too few vectors to train the structure, unknown factory.
    """
    x = normalize(vectors)
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over zero vectors")
    factory = resolve_factory(factory, n)
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows)
    if rows.dtype != np.int64 or rows.shape != (n,):
        raise ValueError(f"rows must be int64 [{n}], got {rows.dtype} {rows.shape}")
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"faiss cannot build factory string {factory!r}: {str(e).splitlines()[0]}") from None
    index = _maybe_gpu(index, factory, use_gpu)
    t0 = time.perf_counter()
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index) if "IVF" in factory else None
        if ivf is not None and n < ivf.nlist:
            raise ValueError(f"{factory!r} needs at least nlist={ivf.nlist} vectors to train, got {n}; use fewer lists or 'Flat'")
        sample = x
        if train_size is not None and train_size < n:
            sample = x[np.random.default_rng(seed).choice(n, train_size, replace=False)]
        index.train(sample)
    index.add(x)
    manifest = {
        "kind": "ann", "factory": factory, "dim": d, "n": n, "metric": "inner_product_l2_normalised",
        "build_seconds": round(time.perf_counter() - t0, 3), **(meta or {}),
    }
    ann = AnnIndex(index, rows, manifest)
    if params:
        ann.set_search_params(**params)
    return ann
