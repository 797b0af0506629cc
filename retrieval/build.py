"""Index builders for `dlsearch index build --kind bm25|concept|dual` (one function per kind).

    dlsearch index build --kind bm25    --data runs/redial --out runs/redial/index/bm25
    dlsearch index build --kind concept --data runs/redial --out runs/redial/index/concept --factory auto
    dlsearch index build --kind dual    --data runs/redial --out runs/redial/index/dual --config configs/dual_encoder.yaml

`--data DIR` is a `dlsearch data prepare` output (catalog.jsonl, conversations/{train,validation}.jsonl).
Every builder is re-runnable: item embeddings come from the content-hash cache, so an unchanged item is never
embedded twice, and each output directory gets a manifest naming the catalog version it indexes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.retrieval.ann import AnnIndex
from dlsearch.retrieval.bm25 import BM25Index, build_bm25
from dlsearch.retrieval.concept import ConceptSearch, build_concept_index, load_concept_index, save_concept_index
from dlsearch.retrieval.dual_encoder import (
    DualEncoder, DualEncoderConfig, DualSearch, build_dual_index, conversation_pairs, history_pairs, resolve_negatives,
    train_dual_encoder,
)
from dlsearch.retrieval.embedding import embed_items, embed_texts, encoder_info

log = logging.getLogger(__name__)


def build_bm25_index(catalog: Catalog, out_dir: str | Path) -> dict[str, Any]:
    index = build_bm25(catalog)
    index.save(out_dir)
    return {"kind": "bm25", "out": str(out_dir), "n_items": len(catalog), "build_seconds": round(index.build_seconds, 3)}


def build_concept(catalog: Catalog, out_dir: str | Path, *, factory: str = "auto", params: dict[str, Any] | None = None,
                  encoder_path: str | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = build_concept_index(catalog, factory=factory, params=params, encoder_path=encoder_path, cache_dir=cache_dir, show_progress=True)
    save_concept_index(index, out_dir)
    return {"kind": "concept", "out": str(out_dir), "n_items": len(catalog), "factory": index.manifest["factory"],
            "seconds": round(time.perf_counter() - t0, 2)}


def load_dual_config(path: str | Path | None, overrides: dict[str, Any] | None = None, *,
                     sets: Sequence[str] = ()) -> DualEncoderConfig:
    """configs/dual_encoder.yaml (unknown keys rejected by name) with top-level `overrides` and `a.b=value` sets
    (the --set syntax of every verb), validated by the shared data.config validator."""
    from dlsearch.data.config import ConfigError, apply_overrides, load_yaml

    d: dict[str, Any] = load_yaml(path) if path is not None else {}
    d.update(overrides or {})
    apply_overrides(d, sets)
    try:
        return DualEncoderConfig.from_dict(d, where="")
    except ConfigError as e:
        raise ConfigError(f"{path or 'dual encoder config'}: {e}") from None


def train_dual(
    catalog: Catalog,
    train: list[Conversation],
    *,
    validation: list[Conversation] | None = None,
    histories: tuple[Catalog, dict[str, list[tuple[str, int]]]] | None = None,
    config: DualEncoderConfig | None = None,
    cache_dir: str | None = None,
    history_per_user: int = 10,
) -> tuple[DualEncoder, np.ndarray, dict[str, Any]]:
    """Train on conversation->item pairs (+ history->next item pairs of another catalog, e.g. MovieLens).

    Returns (model, catalog item features [n, d], stats)."""
    config = config or DualEncoderConfig()
    pairs = conversation_pairs(train, catalog)
    item_feats = embed_items(catalog, cache_dir=cache_dir, show_progress=True)  # [n, d]
    all_items, targets = item_feats, [catalog.index(t) for _, t in pairs]
    texts = [c for c, _ in pairs]
    n_hist = 0
    if histories is not None:
        h_catalog, h = histories
        hp = history_pairs(h, h_catalog, per_user=history_per_user, seed=config.seed)
        h_feats = embed_items(h_catalog, cache_dir=cache_dir, show_progress=True)
        # history items live after the catalog's rows; they get no id embedding
        all_items = np.concatenate([item_feats, h_feats])
        targets += [len(catalog) + h_catalog.index(t) for _, t in hp]
        texts += [c for c, _ in hp]
        n_hist = len(hp)
    if not texts:
        raise ValueError("no training pairs: the training conversations have no targets in this catalog")
    ctx = embed_texts(texts, cache_dir=cache_dir, show_progress=True)  # [n_pairs, d]
    val = None
    if validation:
        vp = conversation_pairs(validation, catalog)
        if vp:
            val = (embed_texts([c for c, _ in vp], cache_dir=cache_dir, show_progress=True), np.array([catalog.index(t) for _, t in vp], dtype=np.int64))
    t0 = time.perf_counter()
    model = train_dual_encoder(ctx, np.array(targets, dtype=np.int64), all_items, config, n_id_items=len(catalog),
                               validation=val, validation_items=len(catalog))
    stats = {"conversation_pairs": len(pairs), "history_pairs": n_hist, "train_seconds": round(time.perf_counter() - t0, 2),
             "negatives": resolve_negatives(config.negatives, len(all_items)),
             "history": model.history}
    return model, item_feats, stats


def build_dual(
    catalog: Catalog,
    out_dir: str | Path,
    train: list[Conversation],
    *,
    validation: list[Conversation] | None = None,
    histories: tuple[Catalog, dict[str, list[tuple[str, int]]]] | None = None,
    config: DualEncoderConfig | None = None,
    factory: str = "auto",
    params: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Train the dual encoder, save it under out/model, and index item-tower vectors under out/."""
    model, item_feats, stats = train_dual(catalog, train, validation=validation, histories=histories, config=config, cache_dir=cache_dir)
    out = Path(out_dir)
    info = encoder_info()
    model.save(out / "model", catalog_hash=catalog.content_hash(), **info, train_stats=stats)
    index = build_dual_index(model, catalog, item_feats, factory=factory, params=params, meta={**info, "model": "model"})
    index.save(out)
    return {"kind": "dual", "out": str(out), "n_items": len(catalog), "factory": index.manifest["factory"], **stats}


def load_dual_search(index_dir: str | Path, catalog: Catalog | None = None, *, cache_dir: str | None = None) -> DualSearch:
    d = Path(index_dir)
    index = AnnIndex.load(d)
    if index.manifest.get("kind") != "dual":
        raise ValueError(f"{d}: manifest kind {index.manifest.get('kind')!r} is not 'dual'")
    if catalog is not None and index.manifest.get("catalog_hash") != catalog.content_hash():
        raise ValueError(f"{d}: built for another catalog version; rebuild with `dlsearch index build --kind dual`")
    return DualSearch(DualEncoder.load(d / index.manifest.get("model", "model")), index, cache_dir=cache_dir)


def load_concept_search(index_dir: str | Path, catalog: Catalog | None = None, *, aggregate: str = "mean", cache_dir: str | None = None) -> ConceptSearch:
    return ConceptSearch(load_concept_index(index_dir, catalog), aggregate=aggregate, cache_dir=cache_dir)


def load_bm25(index_dir: str | Path | None, catalog: Catalog, *, query_stopwords: str | list[str] = "chat") -> BM25Index:
    from dlsearch.retrieval.bm25 import query_stopwords as stopwords

    index = BM25Index.load(index_dir, catalog) if index_dir else build_bm25(catalog)
    index.query_stopwords = stopwords(query_stopwords)
    return index
