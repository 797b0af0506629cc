"""Id schemes on the full MovieLens catalog (9,742 items): unique, reversible, saved and extended."""

import itertools

import numpy as np
import pytest

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap, IdMapError, build_idmap
from dlsearch.data.semantic_ids import semantic_stats

N_MOVIELENS = 9742
SIMPLE = ("atomic", "sequential", "random", "title")


def _check_unique_reversible(idmap: IdMap, catalog: Catalog) -> None:
    assert len(idmap) == len(catalog) == N_MOVIELENS
    assert len(set(idmap.codes.values())) == len(catalog)
    for item_id in catalog.ids:
        assert idmap.item(idmap.code(item_id)) == item_id


@pytest.mark.parametrize("scheme", SIMPLE)
def test_simple_schemes_unique_reversible_deterministic(movielens, scheme, tmp_path):
    catalog = movielens[0]
    idmap = build_idmap(catalog, scheme, seed=3)
    _check_unique_reversible(idmap, catalog)
    assert build_idmap(catalog, scheme, seed=3).codes == idmap.codes
    idmap.save(tmp_path / "m.json")
    assert IdMap.load(tmp_path / "m.json").codes == idmap.codes


def test_semantic_unique_reversible_and_few_disambiguated(movielens, semantic_map, tmp_path):
    catalog = movielens[0]
    _check_unique_reversible(semantic_map, catalog)
    stats = semantic_stats(semantic_map)
    assert stats["disambiguated_fraction"] <= 0.05, stats
    codes = list(semantic_map.codes.values())
    assert all(c.startswith("<a_") for c in codes)
    # the last level gives items under one prefix distinct codes: no MovieLens item needs a <d_k> (it was 3-5 %)
    assert stats["collision_rate"] == stats["disambiguated_fraction"] == 0.0 and not any("<d_" in c for c in codes)
    assert set(t + ">" for c in codes for t in c.split(">") if t) <= set(semantic_map.special_tokens)
    # prefix-free: every member of a colliding path got a <d_k>
    assert not any(a != b and b.startswith(a) for a, b in itertools.pairwise(sorted(codes)))
    semantic_map.save(tmp_path / "s.json")
    assert IdMap.load(tmp_path / "s.json").params["codebook_size"] == stats["codebook_size"]


def _share_rate(pairs, key) -> float:
    return float(np.mean([key(a) == key(b) for a, b in pairs]))


def test_semantic_first_code_groups_share_genres(movielens, semantic_map):
    catalog = movielens[0]
    rng = np.random.default_rng(0)
    first = lambda i: semantic_map.code(i).split(">")[0]  # noqa: E731
    by_first: dict[str, list[str]] = {}
    for i in catalog.ids:
        by_first.setdefault(first(i), []).append(i)
    same = [tuple(rng.choice(g, 2, replace=False)) for g in by_first.values() if len(g) > 1 for _ in range(5)]
    rand = [tuple(rng.choice(catalog.ids, 2, replace=False)) for _ in range(len(same))]
    genres = lambda i: set(catalog[i].meta["genres"])  # noqa: E731
    share_same = np.mean([bool(genres(a) & genres(b)) for a, b in same])
    share_rand = np.mean([bool(genres(a) & genres(b)) for a, b in rand])
    assert share_same > share_rand + 0.1, (share_same, share_rand)


def test_semantic_deterministic_under_seed(movielens, ml_embeddings):
    catalog = movielens[0].subset(movielens[0].ids[:400])
    emb = ml_embeddings[:400]
    a = build_idmap(catalog, "semantic", seed=1, embeddings=emb, codebook_size=8)
    assert build_idmap(catalog, "semantic", seed=1, embeddings=emb, codebook_size=8).codes == a.codes
    assert build_idmap(catalog, "semantic", seed=2, embeddings=emb, codebook_size=8).codes != a.codes
    with pytest.raises(ValueError, match="embeddings must be"):
        build_idmap(catalog, "semantic", embeddings=emb[:10])


def test_collaborative_unique_reversible_and_corated_share_prefix(movielens, collaborative_map):
    catalog, histories = movielens
    _check_unique_reversible(collaborative_map, catalog)
    codes = list(collaborative_map.codes.values())
    assert not any(a != b and b.startswith(a) for a, b in itertools.pairwise(sorted(codes)))
    # pairs co-rated by many users (>= 60 common raters) vs random pairs: same first token?
    users_of: dict[str, set[str]] = {}
    for user, events in histories.items():
        for item_id, _ in events:
            users_of.setdefault(item_id, set()).add(user)
    popular = sorted(users_of, key=lambda i: -len(users_of[i]))[:200]
    corated = [(a, b) for a, b in itertools.combinations(popular, 2) if len(users_of[a] & users_of[b]) >= 80]
    assert len(corated) > 100
    rng = np.random.default_rng(0)
    rand = [tuple(rng.choice(catalog.ids, 2, replace=False)) for _ in range(len(corated))]
    first = lambda i: collaborative_map.code(i).split(">")[0]  # noqa: E731
    assert _share_rate(corated, first) > 2 * _share_rate(rand, first), (_share_rate(corated, first), _share_rate(rand, first))
    # items nobody rated sit under the reserved cold-start branch
    cold = [it.id for it in catalog if "no_ratings" in it.meta["cold_start"]]
    branch = collaborative_map.params["branching"]
    assert cold and all(collaborative_map.code(i).startswith(f"<cf1_{branch}>") for i in cold)


def test_collaborative_needs_histories(movielens):
    with pytest.raises(ValueError, match="histories"):
        build_idmap(movielens[0], "collaborative")
    with pytest.raises(ValueError, match="not in the catalog"):
        build_idmap(movielens[0].subset(["1"]), "collaborative", histories={"u": ["1", "2"]})


@pytest.mark.parametrize("scheme", SIMPLE + ("semantic", "collaborative"))
def test_extend_keeps_old_codes(movielens, ml_embeddings, scheme):
    full, histories = movielens
    n_old = 600
    old_cat, new_cat = full.subset(full.ids[:n_old]), full.subset(full.ids[: n_old + 50])
    inputs = {}
    if scheme == "semantic":
        inputs = {"embeddings": ml_embeddings[:n_old], "codebook_size": 16}
    if scheme == "collaborative":
        keep = set(old_cat.ids)
        inputs = {"histories": {u: [e for e in ev if e[0] in keep] for u, ev in histories.items()}, "branching": 16,
                  "embeddings": ml_embeddings[:n_old]}
    old = build_idmap(old_cat, scheme, seed=0, **inputs)
    ext_inputs = {"embeddings": ml_embeddings[: n_old + 50]} if scheme == "semantic" else {}
    new = old.extend(new_cat, **ext_inputs)
    assert new.version == 2 and new.parent_hash == old.catalog_hash and new.catalog_hash == new_cat.content_hash()
    assert all(new.codes[i] == c for i, c in old.codes.items())
    assert len(set(new.codes.values())) == len(new_cat)
    assert set(t + ">" for c in new.codes.values() for t in c.split(">") if t and c.startswith("<")) <= set(new.special_tokens)
    with pytest.raises(IdMapError, match="only add"):
        new.extend(old_cat.subset(old_cat.ids[:10]))


def test_title_codes_are_display_titles_with_suffixed_duplicates_and_match_normalized() -> None:
    """GENRE-style title ids (scheme version 2): the model writes the title as displayed; the normalized form is
    only for matching. Regression: version 1 codes were lowercased ('toy story (1995)')."""
    from dlsearch.data.catalog import Item

    cat = Catalog([Item("1", "Toy Story (1995)"), Item("2", "Matrix, The (1999)"), Item("3", "The Matrix  (1999)"),
                   Item("4", " (2015)"), Item("5", "toy story (1995)"), Item("6", "Toy Story (1995) [2]")])
    m = build_idmap(cat, "title")
    assert m.params["scheme_version"] == 2
    assert [m.codes[i] for i in "1234"] == ["Toy Story (1995)", "Matrix, The (1999)", "The Matrix (1999) [2]", "(2015)"]
    # duplicates under normalization get distinct suffixes, and no two codes share a normalized form
    from dlsearch.data.titles import normalize_title

    assert len({normalize_title(c) for c in m.codes.values()}) == len(cat)
    assert m.codes["5"].startswith("toy story (1995) [") and m.codes["6"].startswith("Toy Story (1995) [2]")
    assert m.item("the matrix (1999)") == "2" and m.item("THE MATRIX (1999) [2]") == "3" and m.item("(2015)") == "4"
    with pytest.raises(IdMapError):
        m.item("The Matrix Reloaded (2003)")
    bigger = m.extend(Catalog(list(cat) + [Item("7", "Toy Story  (1995)")]))
    assert bigger.codes["7"].startswith("Toy Story (1995) [") and bigger.codes["7"] not in m.codes.values()


def test_title_maps_of_version_1_still_extend_with_normalized_codes() -> None:
    from dlsearch.data.catalog import Item

    cat = Catalog([Item("1", "Toy Story (1995)")])
    old = IdMap(scheme="title", codes={"1": "toy story (1995)"}, catalog_hash=cat.content_hash(), params={"seed": 0})
    ext = old.extend(Catalog([Item("1", "Toy Story (1995)"), Item("2", "Heat (1995)")]))
    assert ext.codes == {"1": "toy story (1995)", "2": "heat (1995)"}


@pytest.mark.parametrize("scheme, params, bad", [
    ("random", {"lenght": 3}, "lenght"),  # issue 13: a misspelled parameter was accepted and saved
    ("atomic", {"length": 3}, "length"),  # atomic takes no parameters at all
    ("semantic", {"codebook": 8}, "codebook"),
])
def test_unknown_scheme_parameter_refused_with_suggestion(movielens, scheme, params, bad):
    catalog = movielens[0].subset(movielens[0].ids[:50])
    with pytest.raises(ValueError, match=rf"'{bad}'") as e:
        build_idmap(catalog, scheme, **params)
    if bad == "lenght":
        assert "did you mean 'length'" in str(e.value)
