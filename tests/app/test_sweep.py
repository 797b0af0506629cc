"""dlsearch/app/sweep.py orchestration with stand-in steps: nesting, synthetic sizes, caching, resume, crossover, outputs.

The stand-in model "memorizes" the first CAPACITY items of any catalog and answers requests only among those, so
direct search must lose to BM25 once the catalog outgrows it: the crossover is known in advance.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.evaluation.baselines import BM25Search  # noqa: F401  (the package baseline; the text fallback below is separate)
from dlsearch.evaluation.metrics import id_tie_order, per_query_scores, top_k_rows
from dlsearch.app.sweep import SweepConfig, SweepSteps, catalog_at, crossover, held_out_requests, run_sweep
from dlsearch.evaluation.synthetic import AttributeDistribution, synthetic_items

CAPACITY = 50
REAL_ITEMS = 120


@pytest.fixture(scope="module")
def movielens_catalog() -> Catalog:
    root = Path(__file__).resolve().parents[2] / "data" / "datasets" / "movielens-latest-small"
    tags: dict[str, dict[str, str]] = {}
    with open(root / "tags.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            tags.setdefault(r["movieId"], {}).setdefault(r["tag"].strip().lower(), r["tag"].strip())
    items = []
    with open(root / "movies.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            g = [x for x in r["genres"].split("|") if x != "(no genres listed)"]
            t = list(tags.get(r["movieId"], {}).values())
            items.append(Item(r["movieId"], r["title"], concepts=tuple(dict.fromkeys(g + t)), meta={"genres": g, "tags": t}))
    return Catalog(items)


def _words(text: str) -> set[str]:
    return set(text.lower().replace("(", " ").replace(")", " ").replace(",", " ").split())


class StandIn:
    """Counts calls; optionally fails once in a stage to simulate an interruption."""

    def __init__(self, fail_at: tuple[str, int] | None = None):
        self.calls: dict[str, int] = {}
        self.fail_at = fail_at

    def _count(self, stage: str, size: int) -> None:
        self.calls[stage] = self.calls.get(stage, 0) + 1
        if self.fail_at == (stage, size):
            self.fail_at = None
            raise KeyboardInterrupt(f"simulated interruption in {stage} at size {size}")

    def steps(self) -> SweepSteps:
        def train(catalog, idmap, out_dir: Path, cfg):
            self._count("train", len(catalog))
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "memorized.json").write_text(json.dumps(catalog.ids[:CAPACITY]))
            return out_dir

        def generate_ids(model_dir, catalog, idmap, titles):
            self._count("generate", len(catalog))
            known = set(json.loads((model_dir / "memorized.json").read_text()))
            by_title = {it.title: it.id for it in catalog}
            return [idmap.code(by_title[t]) if by_title[t] in known else "not-an-id" for t in titles]

        def direct_search(model_dir, catalog, idmap, texts, k, cfg):
            self._count("direct", len(catalog))
            known = json.loads((model_dir / "memorized.json").read_text())
            rows_known = np.array([catalog.index(i) for i in known])
            dense = np.full((len(texts), len(catalog)), -np.inf)
            for n, t in enumerate(texts):
                q = _words(t)
                for r in rows_known:
                    w = _words(catalog.items[r].title)
                    dense[n, r] = len(q & w) / max(1, len(q | w))
            return top_k_rows(dense, k, id_tie_order(catalog.ids))

        def fallback(name, catalog, work_dir, cfg):
            assert name == "bm25"
            docs = [_words(it.title + " " + " ".join(it.concepts)) for it in catalog]

            def search(texts, k):
                self._count("bm25", len(catalog))
                dense = np.array([[len(_words(t) & d) for d in docs] for t in texts], dtype=float)
                return top_k_rows(dense, k, id_tie_order(catalog.ids))

            return search

        return SweepSteps(train=train, generate_ids=generate_ids, direct_search=direct_search, fallback=fallback, router=None)


def _cfg(tmp_path: Path) -> SweepConfig:
    return SweepConfig(name="standin", sizes=[40, 80], synthetic_sizes=[240], real_items=REAL_ITEMS, n_requests=40,
                       memorization_sample=0, fallbacks=["bm25"], router=False, n_resamples=100, out=str(tmp_path / "sweep"),
                       id_scheme="sequential")


def test_catalogs_nest_and_synthetic_items_follow_real_attributes(movielens_catalog) -> None:
    small, big = catalog_at(movielens_catalog, 40, seed=0), catalog_at(movielens_catalog, 80, seed=0)
    assert big.ids[:40] == small.ids
    syn = catalog_at(movielens_catalog, 240, seed=0, real_items=REAL_ITEMS)
    assert syn.ids[:80] == catalog_at(movielens_catalog, 80, seed=0, real_items=REAL_ITEMS).ids
    fake = [it for it in syn if it.meta.get("synthetic")]
    assert len(fake) == 120 and len({it.title for it in syn}) == 240
    # genres of synthetic items follow the real frequencies: Drama and Comedy dominate in both
    dist = AttributeDistribution(movielens_catalog)
    many = synthetic_items(dist, 3000, seed=1)
    real_drama = np.mean(["Drama" in it.meta["genres"] for it in movielens_catalog])
    syn_drama = np.mean(["Drama" in it.meta["genres"] for it in many])
    assert abs(real_drama - syn_drama) < 0.04
    assert synthetic_items(dist, 5, seed=1) == many[:5]  # deterministic and nested


def test_requests_are_held_out_phrasings(movielens_catalog) -> None:
    cat = catalog_at(movielens_catalog, 200, seed=0)
    reqs = held_out_requests(cat, 50, seed=0)
    assert len({t for _, t in reqs}) == 50 and reqs == held_out_requests(cat, 50, seed=0)
    assert all(text != cat[t].title for text, t in reqs)


def test_training_requests_never_repeat_a_held_out_phrasing(movielens_catalog, tmp_path) -> None:
    from dlsearch.app.sweep import training_requests

    cat = catalog_at(movielens_catalog, 300, seed=0)
    cfg = _cfg(tmp_path)
    cfg.n_requests = 300  # every item has a held-out request: short titles then collide between the two seeds
    held = set(held_out_requests(cat, cfg.n_requests, seed=cfg.seed, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts))
    train = training_requests(cat, cfg)
    assert train and not set(train) & held
    assert 0 < len(cat) - len(train) < len(cat) // 2  # some identical phrasings were dropped, most items kept one
    cfg.train_requests_per_item = 3
    more = training_requests(cat, cfg)
    assert set(train) < set(more) and len(more) == len(set(more)) and not set(more) & held
    assert 2 * len(train) < len(more) <= 3 * len(cat)


def test_validation_requests_never_repeat_a_held_out_request(movielens_catalog, tmp_path) -> None:
    from dlsearch.app.sweep import training_requests, validation_requests

    cat = catalog_at(movielens_catalog, 60, seed=0)
    cfg = _cfg(tmp_path)
    cfg.n_requests = 60
    held = set(held_out_requests(cat, cfg.n_requests, seed=cfg.seed, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts))
    val = validation_requests(cat, cfg)
    assert val and not set(val) & held and len(val) < 60  # some short titles give the same phrasing: dropped
    assert not set(val) & set(training_requests(cat, cfg))  # nor is a trained phrasing used to choose


def test_sweep_runs_caches_resumes_and_finds_the_crossover(movielens_catalog, tmp_path) -> None:
    cfg = _cfg(tmp_path)
    stand = StandIn(fail_at=("direct", 80))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    assert stand.calls == {"train": 2, "generate": 2, "direct": 2, "bm25": 1}  # size 40 done, size 80 stopped in direct
    result = run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    # resumed: size 80's train and memorization were not redone; only its direct stage and size 240 ran
    assert stand.calls == {"train": 3, "generate": 3, "direct": 4, "bm25": 3}
    pts = {p["size"]: p for p in result["points"]}
    assert pts[40]["memorization"]["exact_match"] == 1.0 and pts[240]["memorization"]["exact_match"] == pytest.approx(CAPACITY / 240)
    assert pts[240]["synthetic_items"] == 120
    assert pts[40]["recall@10"]["direct"]["mean"] > pts[240]["recall@10"]["direct"]["mean"]
    cx = result["crossover"]
    assert cx["size"] in (80, 240) and cx["fallback"] == "bm25"
    out = Path(cfg.out)
    queries = [json.loads(x) for x in next(out.glob("points/size-000040-*/queries.jsonl")).read_text().splitlines()]
    assert len(queries) >= 30 and {q["item_id"] for q in queries} <= set(catalog_at(movielens_catalog, 40, seed=0).ids)
    assert (out / "sweep.png").stat().st_size > 10_000 and (out / "sweep.csv").read_text().count("\n") == 4
    md = (out / "sweep.md").read_text()
    assert md.count("\n| ") == 3 and "Crossover: bm25" in md and "Memorization limit" in md
    # a third run does no work at all
    before = dict(stand.calls)
    again = run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    assert stand.calls == before and again["points"] == result["points"]


def test_large_points_are_left_to_a_gpu_run(movielens_catalog, tmp_path) -> None:
    cfg = _cfg(tmp_path)
    cfg.cpu_max_size = 100
    result = run_sweep(cfg, StandIn().steps(), real=movielens_catalog, on_gpu=False)
    skipped = [p for p in result["points"] if p["status"] == "skipped"]
    assert [p["size"] for p in skipped] == [240] and "GPU" in skipped[0]["reason"]


def test_points_prepared_elsewhere_are_used_as_they_are(movielens_catalog, tmp_path, monkeypatch) -> None:
    """bench/gpu_stage.py prepares point dirs (the semantic idmap needs a sentence encoder the GPU image lacks) with
    point_dir/prepare_point; a sweep with the same config finds them and builds no idmap of its own."""
    import dlsearch.app.sweep as sweep_mod

    cfg = _cfg(tmp_path)
    staged = tmp_path / "staged"
    stand = StandIn()
    for size in cfg.point_sizes():
        catalog = catalog_at(movielens_catalog, size, seed=cfg.seed, real_items=cfg.real_items)
        sweep_mod.prepare_point(cfg, catalog, sweep_mod.point_dir(cfg, size, catalog, staged, stand.steps().version))
    shutil.copytree(staged, cfg.out)

    def no_build(*a, **k):
        raise AssertionError("the staged idmap was not used")

    monkeypatch.setattr(sweep_mod, "build_idmap", no_build)
    result = run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    assert [p["status"] for p in result["points"]] == ["done"] * 3
    assert {Path(p["dir"]).name for p in result["points"]} == {d.name for d in (staged / "points").iterdir()}


def test_crossover_interpolates_in_log_size() -> None:
    def pt(size, direct, fb):
        return {"size": size, "status": "done", "recall@10": {"direct": {"mean": direct}, "bm25": {"mean": fb}}}

    cx = crossover([pt(100, 0.9, 0.3), pt(1000, 0.5, 0.4), pt(10000, 0.1, 0.5)], 10)
    assert cx["size"] == 10000 and cx["fallback"] == "bm25"
    assert 1000 < cx["interpolated_size"] < 10000
    assert crossover([pt(100, 0.9, 0.3)], 10)["size"] is None


def test_memorization_limit_interpolates_where_exact_match_falls_below() -> None:
    from dlsearch.app.sweep import memorization_limit

    def pt(size, em):
        return {"size": size, "status": "done", "memorization": {"exact_match": em}}

    lim = memorization_limit([pt(250, 0.95), pt(1000, 0.9), pt(4000, 0.5), pt(9742, 0.2)], 0.8)
    assert lim["size"] == 1000 and lim["falls_below_at"] == 4000
    assert 1000 < lim["interpolated_size"] < 4000
    assert lim["interpolated_size"] == pytest.approx(1000 * 4 ** 0.25)  # a quarter of the way down in log size
    assert memorization_limit([pt(250, 0.5)], 0.8)["size"] is None
    assert memorization_limit([pt(250, 0.9), pt(1000, 0.85)], 0.8)["size"] == 1000


def test_sweep_tiny_config_end_to_end(tmp_path) -> None:
    """configs/sweep-tiny.yaml with the real steps: finetune trains, decoding searches, retrieval's BM25 falls back."""
    pytest.importorskip("dlsearch.finetune.train", reason="finetune area not merged into this checkout")
    pytest.importorskip("dlsearch.decoding.direct", reason="decoding area not merged into this checkout")
    import torch

    from dlsearch.cli import main

    out = tmp_path / "tiny"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is shared: one thread per process avoids OpenMP oversubscription stalls
    try:
        assert main(["sweep", "--config", "configs/sweep-tiny.yaml", "--set", f"out={out}"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((out / "sweep.json").read_text())
    done = [p for p in result["points"] if p["status"] == "done"]
    assert [p["size"] for p in done] == [20, 40, 80] and done[-1]["synthetic_items"] == 20
    for p in done:
        mem = p["memorization"]  # exact match over the n items of this size point: a count / n
        assert mem["n"] == p["size"] and round(mem["exact_match"] * mem["n"]) / mem["n"] == pytest.approx(mem["exact_match"])
        assert mem["exact_match"] <= mem["valid_rate"]  # an exact code is a valid one
        assert set(p["recall@10"]) == {"direct", "bm25", "router", "router-validated"}
        rv = p["router_validated"]  # chosen on validation requests, then measured on the held-out ones
        assert rv["chosen"] == max(rv["validation_recall"], key=rv["validation_recall"].get) and rv["n_validation"] > 0
        assert p["recall@10"]["router-validated"]["mean"] == p["recall@10"][rv["chosen"]]["mean"]
    assert (out / "sweep.png").is_file()
    from dlsearch.app.sweep import crossover
    assert result["crossover"] == crossover(result["points"], result["k"])  # the reported crossover is the points' one


def test_default_fallback_bm25_answers_requests(movielens_catalog, tmp_path) -> None:
    from dlsearch.app.sweep import _hits
    from dlsearch.app.sweep_steps import fallback, request_concepts

    assert request_concepts("heat (Action, Crime)") == ["Action", "Crime"] and request_concepts("heat") == []
    cat = catalog_at(movielens_catalog, 300, seed=0)
    reqs = held_out_requests(cat, 50, seed=0)
    search = fallback("bm25", cat, tmp_path, _cfg(tmp_path))
    _, rows = search([t for t, _ in reqs], 10)
    hits = _hits(rows, cat, [i for _, i in reqs], 10)
    assert np.mean(hits) > 0.8  # half the title words find most items
    # the sweep's recall is evaluation.metrics' recall@10 on the same rankings
    rankings = [[cat.items[r].id for r in row if r >= 0] for row in rows.tolist()]
    assert hits == per_query_scores(rankings, [[i] for _, i in reqs], "recall@10").tolist()
    with pytest.raises(ValueError, match="unknown fallback"):
        fallback("nope", cat, tmp_path, _cfg(tmp_path))


def test_sweep_pretrained_config_end_to_end(tmp_path) -> None:
    """configs/sweep-movielens-pretrained.yaml (LoRA on a local pretrained base) with tiny overrides: a 2-layer HF
    dir stands in for SmolLM2; finetune adds the id tokens, LoRA trains, direct search and BM25 answer."""
    pytest.importorskip("dlsearch.finetune.train", reason="finetune area not merged into this checkout")
    import torch

    from dlsearch.cli import main
    from tests.decoding_fixtures import make_model, make_tokenizer

    base = tmp_path / "base"
    tok = make_tokenizer()
    make_model(len(tok), seed=0, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id).save_pretrained(base)
    tok.save_pretrained(base)
    out = tmp_path / "sweep"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI machine: one thread per process avoids OpenMP oversubscription stalls
    try:
        assert main(["sweep", "--config", "configs/sweep-movielens-pretrained.yaml", "--set", f"out={out}",
                     "--set", "sizes=[20]", "--set", "cpu_max_size=100", "--set", "real_items=60",
                     "--set", "id_scheme=sequential", "--set", "id_params={}", "--set", "epochs_per_item=2",
                     "--set", "memorization_sample=0", "--set", "n_requests=10", "--set", "fallbacks=[bm25]",
                     "--set", "n_resamples=50", "--set", "step_options={num_beams: 10}",
                     "--set", f"recipe_overrides=[model.pretrained={base}, stages.index.lora.r=4, stages.index.train.batch_size=8]"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((out / "sweep.json").read_text())
    (point,) = result["points"]
    assert point["status"] == "done" and point["size"] == 20
    assert 0 <= point["memorization"]["exact_match"] <= 1 and {"direct", "bm25", "router"} <= set(point["recall@10"])
    manifest = json.loads(next(out.glob("points/*/model/manifest.json")).read_text())
    assert manifest["kind"] == "adapter" and manifest["method"] == "lora" and manifest["base_model"].endswith("init")


def test_a_changed_recipe_file_is_refused_not_reused(movielens_catalog, tmp_path) -> None:
    # regression: the point key holds the recipe's path, not its contents; an edited recipe reused the old models
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages: [{name: lora, train: {lr: 1.0e-3}}]\n")
    cfg = _cfg(tmp_path)
    cfg.recipe, cfg.synthetic_sizes = str(recipe), []
    stand = StandIn()
    run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    marks = sorted(Path(cfg.out).glob("points/*/recipe.sha256"))
    assert len(marks) == 2 and str(recipe) in marks[0].read_text()
    run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)  # unchanged: reused
    assert stand.calls["train"] == 2
    recipe.write_text("stages: [{name: lora, train: {lr: 3.0e-4}}]\n")
    with pytest.raises(ValueError, match=r"recipe.yaml changed since the point .* was trained with it"):
        run_sweep(cfg, stand.steps(), real=movielens_catalog, on_gpu=False)
    assert stand.calls["train"] == 2


def _shop_csv(path: Path) -> None:
    """A product catalog in a shop's own columns: asin / name / categories ('|'-separated), ids like B0-00000."""
    from dlsearch.evaluation.synthetic import product_catalog

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["asin", "name", "categories", "price"])
        for n, it in enumerate(product_catalog(variants=False)):
            w.writerow([it.id, it.title, "|".join(it.concepts), f"{10 + n % 7}.99"])


def test_sweep_takes_any_catalog_file(tmp_path) -> None:
    """The sweep read only MovieLens folders: a memorization study of one's own catalog had to fake that layout.
    `catalog` names any catalog file (own columns) or prepared dir; its items are the real part, synthetic items
    beyond it are drawn from its own titles and concepts."""
    shop = tmp_path / "shop.csv"
    _shop_csv(shop)
    cfg = replace(_cfg(tmp_path), catalog=str(shop), catalog_columns={"id": "asin", "title": "name", "concepts": "categories"})
    result = run_sweep(cfg, StandIn().steps(), on_gpu=False)
    assert result["real_catalog"]["items"] == 1600 and result["real_catalog"]["source"] == str(shop)
    done = {p["size"]: p for p in result["points"]}
    assert done[240]["synthetic_items"] == 240 - REAL_ITEMS
    from dlsearch.data.catalog import load_catalog_jsonl

    point = load_catalog_jsonl(Path(done[40]["dir"]) / "catalog.jsonl")
    assert all(i.startswith("B0-") for i in point.ids) and point.items[0].meta == {"price": point.items[0].meta["price"]}
    syn = [it for it in load_catalog_jsonl(Path(done[240]["dir"]) / "catalog.jsonl") if it.meta.get("synthetic")]
    assert len(syn) == 240 - REAL_ITEMS and all(set(it.concepts) <= _all_concepts(shop) for it in syn)

    with pytest.raises(ValueError, match="catalog .* and data .* both name the real catalog"):
        replace(cfg, data="somewhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without catalog.jsonl"):
        run_sweep(replace(cfg, catalog=str(tmp_path / "empty"), catalog_columns={}), StandIn().steps(), on_gpu=False)


def _all_concepts(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {c for r in csv.DictReader(f) for c in r["categories"].split("|")}


def test_sweep_cli_on_a_shop_catalog_from_another_directory(tmp_path, monkeypatch) -> None:
    """`dlsearch sweep` with the real steps on a shop CSV named relative to the config file, run from a directory
    that holds neither the config nor the recipe (the recipe is the shipped one)."""
    pytest.importorskip("dlsearch.finetune.train", reason="finetune area not merged into this checkout")
    import torch
    import yaml

    from dlsearch.cli import main

    conf = tmp_path / "study"
    conf.mkdir()
    _shop_csv(conf / "shop.csv")
    (conf / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "shop", "sizes": [20, 40], "synthetic_sizes": [], "cpu_max_size": 100, "real_items": 0,
        "catalog": "shop.csv", "catalog_columns": {"id": "asin", "title": "name", "concepts": "categories"},
        "recipe": "configs/sweep-recipe-tiny.yaml", "epochs_per_item": 10, "memorization_sample": 0, "n_requests": 10,
        "fallbacks": ["bm25"], "router": False, "router_validation": False, "step_options": {"num_beams": 4},
        "n_resamples": 50, "out": "out"}))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["sweep", "--config", str(conf / "sweep.yaml")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((run_dir / "out" / "sweep.json").read_text())
    assert result["real_catalog"]["items"] == 1600 and result["real_catalog"]["source"] == str((conf / "shop.csv").resolve())
    done = [p for p in result["points"] if p["status"] == "done"]
    assert [p["size"] for p in done] == [20, 40]
    for p in done:
        assert p["memorization"]["n"] == p["size"] and set(p["recall@10"]) == {"direct", "bm25"}
        assert p["recall@10"]["bm25"]["mean"] > 0  # product requests (title words + categories) find products


def test_compare_merges_one_settings_points_and_keeps_others_apart(tmp_path) -> None:
    """`dlsearch sweep --compare`: sweeps of one setting run size by size (the pretrained points were three runs)
    had no common curve or limit. Dirs with one label merge into one series (limit recomputed over all its points);
    a dir whose settings differ is refused under that label and charted under its own."""
    from dlsearch.app.sweep import compare_sweeps, memorization_limit
    from dlsearch.cli import main

    small = replace(_cfg(tmp_path), sizes=[40], synthetic_sizes=[], out=str(tmp_path / "a"))
    large = replace(_cfg(tmp_path), name="other-name", sizes=[80, 120], synthetic_sizes=[], out=str(tmp_path / "b"))
    other = replace(_cfg(tmp_path), sizes=[40, 80], synthetic_sizes=[], n_requests=30, out=str(tmp_path / "c"))
    for cfg in (small, large, other):
        run_sweep(cfg, StandIn().steps(), on_gpu=False)

    cmp = compare_sweeps([("m", small.out), ("m", large.out), ("n", other.out)])
    m, n = cmp["series"]
    assert [p["size"] for p in m["points"]] == [40, 80, 120] and m["dirs"] == [small.out, large.out]
    assert m["memorization_limit"] == memorization_limit(m["points"], 0.8)
    assert m["memorization_limit"]["size"] == 40  # the stand-in memorizes 50 items: 80 falls below, found only merged
    assert [p["size"] for p in n["points"]] == [40, 80]
    with pytest.raises(ValueError, match=r"series 'm': .* differs from .* in \['n_requests'\]"):
        compare_sweeps([("m", small.out), ("m", other.out)])
    with pytest.raises(ValueError, match="size 40 is measured in"):
        compare_sweeps([("m", small.out), ("m", small.out)])
    with pytest.raises(FileNotFoundError, match="no sweep.json"):
        compare_sweeps([("m", tmp_path)])
    # A sweep written before a setting existed ran at its default: the committed 1,000- and 4,000-item points lack
    # catalog / catalog_columns / concept_sep, and merging the 6,300-item point with them was refused on those keys.
    older = tmp_path / "older"
    shutil.copytree(large.out, older)
    res = json.loads((older / "sweep.json").read_text())
    for key in ("catalog", "catalog_columns", "concept_sep"):
        del res["config"][key]
    (older / "sweep.json").write_text(json.dumps(res))
    assert [p["size"] for p in compare_sweeps([("m", small.out), ("m", older)])["series"][0]["points"]] == [40, 80, 120]
    res["config"]["concept_sep"] = ";"  # an absent key is its default, a present one is compared
    (older / "sweep.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match=r"differs from .* in \['concept_sep'\]"):
        compare_sweeps([("m", small.out), ("m", older)])

    out = tmp_path / "cmp"
    assert main(["sweep", "--compare", small.out, large.out, other.out, "--label", "m", "m", "n", "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "| m | 120 |" in md and "| n | 80 |" in md and "m: exact match >= 0.8 up to 40 items, below at 80" in md
    assert json.loads((out / "compare.json").read_text())["series"][0]["label"] == "m"
    assert (out / "compare.png").stat().st_size > 10_000
    assert main(["sweep", "--compare", small.out, "--label", "a", "b"]) == 2  # one label per dir
    # no --label: each sweep is charted under its own name
    assert main(["sweep", "--compare", small.out, large.out, "--out", str(tmp_path / "named")]) == 0
    named = json.loads((tmp_path / "named" / "compare.json").read_text())["series"]
    assert [s["label"] for s in named] == [small.name, "other-name"]
    assert main(["sweep", "--compare", small.out, "--config", "configs/sweep-tiny.yaml"]) == 2
