from __future__ import annotations

import numpy as np
import pytest

from dlsearch.retrieval.ann import AnnIndex, build_ann, normalize

N, D = 2000, 32


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


def test_flat_is_exact_cosine(vectors):
    index = build_ann(vectors, "Flat")
    q = vectors[:5] + 0.01
    scores, rows = index.search(q, 10)
    sims = normalize(q) @ normalize(vectors).T
    np.testing.assert_array_equal(rows, np.argsort(-sims, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :10], atol=1e-5)


@pytest.mark.parametrize("factory,params", [("HNSW16", {"efSearch": 64}), ("IVF16,Flat", {"nprobe": 8})])
def test_approximate_structures_recall(vectors, factory, params):
    exact = build_ann(vectors, "Flat").search(vectors[:50], 10)[1]
    approx = build_ann(vectors, factory, params=params).search(vectors[:50], 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall


def test_row_map_padding_save_load(vectors, tmp_path):
    rows = np.arange(100, 100 + 20, dtype=np.int64)[::-1].copy()
    index = build_ann(vectors[:20], "HNSW8", rows=rows, params={"efSearch": 32}, meta={"catalog_hash": "abc"})
    scores, got = index.search(vectors[:2], 25)
    assert got[0, 0] == rows[0] and got[1, 0] == rows[1]
    assert (got[:, 20:] == -1).all() and np.isneginf(scores[:, 20:]).all()
    index.save(tmp_path / "ann")
    loaded = AnnIndex.load(tmp_path / "ann")
    assert loaded.manifest["catalog_hash"] == "abc" and loaded.manifest["search_params"] == {"efSearch": 32}
    np.testing.assert_array_equal(loaded.search(vectors[:2], 25)[1], got)
    assert not list(tmp_path.glob("**/*.pkl"))


def test_input_checks(vectors):
    with pytest.raises(TypeError, match="float32"):
        build_ann(vectors.astype(np.float64))
    with pytest.raises(ValueError, match="nlist=64"):
        build_ann(vectors[:10], "IVF64,Flat")
    with pytest.raises(ValueError, match="factory string"):
        build_ann(vectors, "NotAnIndex")
    with pytest.raises(ValueError, match="dim"):
        build_ann(vectors, "Flat").search(vectors[:, :8].copy(), 3)
    with pytest.raises(ValueError, match="unknown ANN search parameter"):
        build_ann(vectors, "Flat", params={"efsearch": 3})
