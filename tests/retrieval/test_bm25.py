from __future__ import annotations

import numpy as np
import pytest

from dlsearch.retrieval.bm25 import BM25Index, build_bm25
from dlsearch.retrieval.shape import check_result


def test_title_query_finds_the_item(ml_catalog):
    index = build_bm25(ml_catalog)
    scores, rows = index.search(["Toy Story", "Heat 1995 crime", "jumanji"], k=5)
    check_result(scores, rows, 3, 5)
    assert ml_catalog.items[rows[0, 0]].title.startswith("Toy Story")
    assert "Heat" in ml_catalog.items[rows[1, 0]].title
    assert ml_catalog.items[rows[2, 0]].title.startswith("Jumanji")


def test_concept_words_match_items_with_that_concept(ml_catalog):
    scores, rows = build_bm25(ml_catalog).search(["animation"], k=10)
    assert (rows[0] >= 0).sum() >= 5
    for r in rows[0][rows[0] >= 0]:
        assert any("animation" in c.lower() for c in ml_catalog.items[r].concepts)


def test_no_shared_word_pads_and_k_beyond_catalog(ml_catalog):
    index = build_bm25(ml_catalog)
    scores, rows = index.search(["zzqxv", "the and of"], k=3)
    assert (rows == -1).all() and np.isneginf(scores).all()
    scores, rows = index.search(["comedy"], k=len(ml_catalog) + 5)
    assert rows.shape == (1, len(ml_catalog) + 5) and rows[0, -1] == -1
    with pytest.raises(TypeError):
        index.search("comedy", 3)


def test_save_load_roundtrip_and_catalog_check(ml_catalog, tmp_path):
    index = build_bm25(ml_catalog)
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25", ml_catalog)
    a, b = index.search(["space adventure"], 7), loaded.search(["space adventure"], 7)
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="rebuild"):
        BM25Index.load(tmp_path / "bm25", ml_catalog.subset(ml_catalog.ids[:10]))
