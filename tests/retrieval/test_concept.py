from __future__ import annotations

import numpy as np
import pytest

from dlsearch.retrieval.concept import ConceptSearch, build_concept_index, load_concept_index, save_concept_index, snap_to_vocabulary
from dlsearch.retrieval.fusion import rrf


@pytest.fixture(scope="module")
def concept_index(ml_catalog, embed_cache):
    return build_concept_index(ml_catalog, factory="Flat", cache_dir=embed_cache)


def _has(catalog, row, word):
    it = catalog.items[row]
    return any(word in c.lower() for c in it.concepts) or word in it.title.lower()


@pytest.mark.parametrize("aggregate", ["mean", "weighted", "rrf"])
def test_concepts_find_items_with_those_concepts(ml_catalog, concept_index, embed_cache, aggregate):
    search = ConceptSearch(concept_index, aggregate=aggregate, cache_dir=embed_cache)
    scores, rows = search.search([["animation", "children"], ["horror"], []], k=10)
    # rrf keeps items strong on either concept; mean/weighted look for both at once
    assert sum(_has(ml_catalog, r, "animation") or _has(ml_catalog, r, "children") for r in rows[0]) >= 7
    if aggregate != "rrf":
        assert sum(_has(ml_catalog, r, "animation") for r in rows[0]) >= 4  # of 6 animation items in 400 (base rate 1.5 %)
    assert sum(_has(ml_catalog, r, "horror") for r in rows[1]) >= 6
    assert (rows[2] == -1).all()
    # the untargeted baseline: random items rarely have the concept
    base = np.mean([_has(ml_catalog, r, "horror") for r in range(len(ml_catalog))])
    assert base < 0.2


def test_weighted_prefers_rare_concept(ml_catalog, concept_index, embed_cache):
    search = ConceptSearch(concept_index, aggregate="weighted", cache_dir=embed_cache)
    assert search.idf("drama") < search.idf("animation")  # drama is far more common in MovieLens
    with pytest.raises(ValueError, match="weights"):
        search.search([["drama", "war"]], 5, weights=[[1.0]])


def test_save_load_and_catalog_check(ml_catalog, concept_index, tmp_path, embed_cache):
    save_concept_index(concept_index, tmp_path / "c")
    loaded = load_concept_index(tmp_path / "c", ml_catalog)
    assert loaded.vocabulary["animation"] == concept_index.vocabulary["animation"]
    q = [["war", "drama"]]
    np.testing.assert_array_equal(
        ConceptSearch(loaded, cache_dir=embed_cache).search(q, 5)[1], ConceptSearch(concept_index, cache_dir=embed_cache).search(q, 5)[1]
    )
    with pytest.raises(ValueError, match="rebuild"):
        load_concept_index(tmp_path / "c", ml_catalog.subset(ml_catalog.ids[:5]))


def test_snap_to_vocabulary(embed_cache):
    vocab = ["Animation", "Horror", "Romance", "Sci-Fi"]
    assert snap_to_vocabulary(["animation", "science fiction", "zzqx"], vocab, cache_dir=embed_cache) == ["Animation", "Sci-Fi"]


def test_rrf_fusion_rewards_agreement():
    a = (np.array([[3, 2, 1]], np.float32), np.array([[5, 6, 7]], np.int64))
    b = (np.array([[9, 8, -np.inf]], np.float32), np.array([[6, 8, -1]], np.int64))
    scores, rows, sources = rrf([a, b], 4)
    assert rows[0, 0] == 6 and sources[0][0] == [1, 0]  # 6 is in both lists; list b ranked it first
    assert set(rows[0]) == {5, 6, 7, 8}
    assert scores[0, 0] == pytest.approx(1 / 62 + 1 / 61)


def test_snap_on_a_catalog_without_concepts_is_a_config_error(tmp_path, embed_cache):
    # regression: snap: true over an empty vocabulary dropped every generated concept, so the strategy silently
    # answered nothing for every conversation
    from dlsearch.app.recommend import build_router, check_config
    from dlsearch.data.catalog import Catalog, Item
    from dlsearch.data.config import ConfigError
    from dlsearch.data.formats import Conversation, Message

    shop = Catalog([Item("w1", "Steel diver watch"), Item("b1", "Canvas bag"), Item("k", "Kindle e-reader")])
    shop.save_jsonl(tmp_path / "catalog.jsonl")
    save_concept_index(build_concept_index(shop, factory="Flat", cache_dir=embed_cache), tmp_path / "concept")

    def router(snap):
        concept = {"enabled": True, "index": str(tmp_path / "concept"), "concepts_from": "meta", "snap": snap}
        cfg = {"catalog": str(tmp_path / "catalog.jsonl"), "cache_dir": embed_cache, "strategies": {"concept": concept},
               "policy": {"link_mentions": False}}
        return build_router(check_config(cfg, "test"))

    with pytest.raises(ConfigError, match="strategies.concept.snap: the catalog .* has no concepts to snap to; set snap: false"):
        router(True)
    conv = Conversation("c", [Message("user", "a gift")], meta={"concepts": ["wristwatch"]})
    assert router(False).recommend(conv, 3).items[0].item_id == "w1"
