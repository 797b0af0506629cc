"""Memorization against corpus size: up to what catalog size can the model name items itself?

    dlsearch sweep --config configs/sweep-movielens.yaml          # resumes where an interrupted run stopped

At each size — nested MovieLens catalogs (250, 1k, 2k, 4k, all 9,742), then synthetic catalogs (30k, 100k) whose
items are drawn from the real attribute distributions (evaluation/synthetic.py) — the same model size is trained
for the same number of epochs per item, and the sweep measures:
  * exact-match memorization: greedy, unconstrained title->id on a sample of catalog items;
  * valid-item rate without the constraint: share of those generations that name some catalog item;
  * recall@10 on held-out requests (half the title words plus two concepts, never seen in training) for direct search
    with the constraint, for each fallback (bm25, concept, dual) and for the router.
Every number carries a 95 % bootstrap interval. The crossover is the first size at which the best fallback's
recall@10 overtakes direct search (log-linear interpolation between the two sizes around it is reported too).

Each point is a directory keyed by a hash of everything that determines it; each stage of a point (train,
memorization, direct, each fallback, router) writes its own JSON when it finishes, so an interrupted sweep
resumes at the first unfinished stage. The work itself is done by the other areas' public functions, gathered
in `SweepSteps` (dlsearch/app/sweep_steps.py builds the default one); tests pass stand-ins.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dlsearch.data.catalog import Catalog, normalize_title, split_title_year
from dlsearch.data.files import atomic_write_text
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.evaluation.config import config_to_dict
from dlsearch.evaluation.metrics import exact_match, recall_at_k, valid_item_rate
from dlsearch.evaluation.stats import bootstrap_ci
from dlsearch.evaluation.synthetic import extend_with_synthetic

SWEEP_FORMAT_VERSION = 1
SearchFn = Callable[[Sequence[str], int], tuple[np.ndarray, np.ndarray]]


@dataclass
class SweepConfig:
    name: str
    # nested real catalog sizes; any size above the real catalog is filled with synthetic items
    sizes: list[int]
    # synthetic catalog sizes (real catalog + synthetic items drawn from its attribute distributions)
    synthetic_sizes: list[int] = field(default_factory=list)
    # on a machine without a GPU, points larger than this are recorded as "left to a GPU run" instead of run
    cpu_max_size: int = 30000
    # use only the first N items of the (shuffled) real catalog as the real part; 0 = all (tiny configs use this)
    real_items: int = 0
    # MovieLens folder (ml-latest-small layout); empty = the bundled copy
    data: str = ""
    # your own catalog instead of MovieLens: a catalog file (.jsonl / .csv / .tsv / .parquet, read as `dlsearch data
    # validate` reads it) or a `dlsearch data prepare` dir (its catalog.jsonl). Requests are drawn from its titles and
    # concepts; sizes beyond it are filled with synthetic items drawn from its own titles and concepts
    catalog: str = ""
    # catalog field -> column of that file, e.g. {id: asin, title: name, concepts: categories}
    catalog_columns: dict[str, str] = field(default_factory=dict)
    # separator of a text concepts column ("Home|Lighting|Bulbs")
    concept_sep: str = "|"
    seed: int = 0
    # id scheme (data/ids.py): sequential ids are the hardest to memorize, semantic ones the easiest
    id_scheme: str = "sequential"
    id_params: dict[str, Any] = field(default_factory=dict)
    # finetune recipe (YAML) fixing the model size and optimisation; the same at every point
    recipe: str = ""
    recipe_overrides: list[str] = field(default_factory=list)
    # passes over each item's examples: equal at every size, so training steps grow with the catalog
    epochs_per_item: float = 3.0
    # items sampled per point for exact-match memorization (0 = all items); the cost of generation grows with it
    memorization_sample: int = 1000
    # held-out requests per point for recall@10
    n_requests: int = 300
    # a request keeps this share of its item's title words (at least one) plus request_concepts of its concepts:
    # 1.0 makes lexical search (BM25) nearly perfect; lower values need knowledge of the item beyond its title
    request_title_keep: float = 0.5
    request_concepts: int = 2
    # training requests per item (distinct phrasings, seeds seed+1 ..), for direct search's query->id task and the
    # dual encoder alike; more phrasings teach more of the mapping from words to items, at the cost of more steps
    train_requests_per_item: int = 1
    k: int = 10
    fallbacks: list[str] = field(default_factory=lambda: ["bm25", "concept", "dual"])
    router: bool = True
    # extra options for the steps (beams, batch sizes, dual-encoder epochs, ...)
    step_options: dict[str, Any] = field(default_factory=dict)
    n_resamples: int = 1000
    # the memorization limit reported: the catalog size where exact-match memorization falls below this level
    trust_exact_match: float = 0.8
    # also report "router-validated": the strategy (or the memorization-policy router) with the best recall@k on
    # validation requests (another seed, never a held-out phrasing), then measured on the held-out requests
    router_validation: bool = True
    out: str = ""

    def __post_init__(self) -> None:
        all_sizes = self.sizes + self.synthetic_sizes
        if not all_sizes or any(s < 2 for s in all_sizes):
            raise ValueError(f"sizes must be a non-empty list of integers >= 2, got {all_sizes}")
        if len(set(all_sizes)) != len(all_sizes):
            raise ValueError(f"sizes repeat: {all_sizes}")
        if not 0.0 < self.trust_exact_match <= 1.0:
            raise ValueError(f"trust_exact_match must be in (0, 1], got {self.trust_exact_match}")
        if self.train_requests_per_item < 1:
            raise ValueError(f"train_requests_per_item must be >= 1, got {self.train_requests_per_item}")
        if self.epochs_per_item <= 0 or self.n_requests < 1 or self.k < 1:
            raise ValueError("epochs_per_item must be > 0, n_requests >= 1, k >= 1")
        if self.catalog and self.data:
            raise ValueError(f"catalog ({self.catalog!r}) and data ({self.data!r}) both name the real catalog; set one "
                             "(data: a MovieLens folder; catalog: any catalog file or prepared dir)")
        if self.catalog_columns and not self.catalog:
            raise ValueError("catalog_columns names the columns of `catalog`, which is empty")
        if not self.out:
            self.out = f"runs/sweep-{self.name}"

    def point_sizes(self) -> list[int]:
        return sorted(self.sizes + self.synthetic_sizes)


@dataclass
class SweepSteps:
    """The other areas' functions the sweep calls (see dlsearch/app/sweep_steps.py for the real ones).

    train(catalog, idmap, out_dir, cfg) -> model dir (finetune: same model size, cfg.epochs_per_item epochs)
    generate_ids(model_dir, catalog, idmap, titles) -> generated id text per title (greedy, no constraint)
    direct_search(model_dir, catalog, idmap, request_texts, k, cfg) -> (scores, rows)  (constrained)
    fallback(name, catalog, work_dir, cfg) -> search(texts, k)                   (retrieval strategies)
    router(model_dir, catalog, idmap, fallbacks, memorization, work_dir, cfg) -> search(texts, k)
        (memorization: this point's {"exact_match", "valid_rate"}, what the router's policy reads)
    """

    train: Callable[[Catalog, IdMap, Path, SweepConfig], Path]
    generate_ids: Callable[[Path, Catalog, IdMap, list[str]], list[str]]
    direct_search: Callable[[Path, Catalog, IdMap, list[str], int, SweepConfig], tuple[np.ndarray, np.ndarray]]
    fallback: Callable[[str, Catalog, Path, SweepConfig], SearchFn]
    router: Callable[[Path, Catalog, IdMap, dict[str, SearchFn], dict[str, Any], Path, SweepConfig], SearchFn] | None = None
    version: str = "1"  # bump when a step's behaviour changes: cached points are then recomputed


# --- catalogs and requests -----------------------------------------------------------------------------------------

def nested_order(catalog: Catalog, seed: int) -> list[str]:
    """A seeded permutation of the catalog's ids: the catalog of size s is its first s ids (so sizes nest)."""
    perm = np.random.default_rng(seed).permutation(len(catalog))
    ids = catalog.ids  # a property that builds a list: read it once
    return [ids[i] for i in perm]


def catalog_at(real: Catalog, size: int, *, seed: int, real_items: int = 0) -> Catalog:
    """The sweep's catalog of `size` items: a nested subset of the real catalog, or all of it plus synthetic items."""
    order = nested_order(real, seed)
    if real_items:
        order = order[:real_items]
    base = real.subset(order)
    if size <= len(base):
        return base.subset(order[:size])
    return extend_with_synthetic(base, size, seed=seed)


def request_text(title: str, concepts: Sequence[str], rng: np.random.Generator, *, keep: float = 0.5, n_concepts: int = 2) -> str:
    """A held-out request for an item: a random `keep` share of its title words (at least one; lower-cased, year
    dropped, order kept) followed by up to `n_concepts` of its concepts — a phrasing never seen in training."""
    words = normalize_title(split_title_year(title)[0], drop_year=True).split()
    n_keep = max(1, int(round(keep * len(words))))
    kept = sorted(rng.choice(len(words), size=min(n_keep, len(words)), replace=False)) if words else []
    picked = [concepts[i] for i in sorted(rng.choice(len(concepts), size=min(n_concepts, len(concepts)), replace=False))] if concepts else []
    return " ".join(words[i] for i in kept) + (f" ({', '.join(picked)})" if picked else "")


def held_out_requests(catalog: Catalog, n: int, *, seed: int, keep: float = 0.5, n_concepts: int = 2) -> list[tuple[str, str]]:
    """(request text, target item id) for `n` items sampled without replacement (all items when n >= size)."""
    rng = np.random.default_rng([seed, len(catalog)])
    rows = rng.choice(len(catalog), size=min(n, len(catalog)), replace=False)
    items = catalog.items
    return [(request_text(items[r].title, items[r].concepts, rng, keep=keep, n_concepts=n_concepts), items[r].id) for r in rows]


def training_requests(catalog: Catalog, cfg: "SweepConfig") -> list[tuple[str, str]]:
    """`train_requests_per_item` training requests per item, drawn with other seeds than the held-out ones (seed + 1,
    seed + 2, ...); repeats are kept once, and a request identical to its item's held-out request (short title, few
    concepts) is dropped, so no held-out phrasing is ever trained on. Direct search (the `query->id` task) and the dual
    encoder train on exactly these pairs."""
    held = set(held_out_requests(catalog, cfg.n_requests, seed=cfg.seed, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts))
    out: dict[tuple[str, str], None] = {}
    for j in range(cfg.train_requests_per_item):
        pairs = held_out_requests(catalog, len(catalog), seed=cfg.seed + 1 + j, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts)
        out.update((p, None) for p in pairs if p not in held)
    return list(out)


def validation_requests(catalog: Catalog, cfg: "SweepConfig") -> list[tuple[str, str]]:
    """n_requests requests drawn with seed + 1000 for choosing among strategies. One that equals a held-out request is
    dropped (the held-out requests stay unseen by every choice the sweep makes), and so is one that equals a training
    request (a memorized phrasing would make the learned strategies look better on validation than on new text)."""
    seen = set(held_out_requests(catalog, cfg.n_requests, seed=cfg.seed, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts))
    seen.update(training_requests(catalog, cfg))
    val = held_out_requests(catalog, cfg.n_requests, seed=cfg.seed + 1000, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts)
    return [p for p in val if p not in seen]


def write_queries(pairs: Sequence[tuple[str, str]], path: Path) -> None:
    """(query, item id) pairs as the JSONL the finetune `query->id` task reads."""
    atomic_write_text(path, "".join(json.dumps({"query": q, "item_id": i}, ensure_ascii=False) + "\n" for q, i in pairs))


def memorization_sample(catalog: Catalog, n: int, *, seed: int) -> list[str]:
    """Item ids whose title->id generation is checked (all items when n is 0 or >= size)."""
    if n <= 0 or n >= len(catalog):
        return list(catalog.ids)
    rows = np.random.default_rng([seed, len(catalog), 1]).choice(len(catalog), size=n, replace=False)
    ids = catalog.ids
    return [ids[r] for r in sorted(rows)]


# --- caching -------------------------------------------------------------------------------------------------------

def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")  # an interrupted write never leaves a stage that looks finished


_ADDED_AFTER_FORMAT_1 = {"train_requests_per_item": 1}


def point_key(cfg: SweepConfig, size: int, catalog_hash: str, steps_version: str) -> str:
    """Hash of everything that determines a point; a changed config gets a fresh directory, not a stale cache."""
    # where the real catalog came from (catalog, its columns, its separator) is left out: its content hash is in the key
    relevant = {k: v for k, v in config_to_dict(cfg).items() if k not in ("name", "out", "sizes", "synthetic_sizes", "cpu_max_size", "n_resamples", "trust_exact_match", "router_validation", "catalog", "catalog_columns", "concept_sep")}
    for name, default in _ADDED_AFTER_FORMAT_1.items():  # fields added later: at their default, caches stay valid
        if relevant.get(name) == default:
            relevant.pop(name)
    blob = json.dumps({"v": SWEEP_FORMAT_VERSION, "size": size, "catalog": catalog_hash, "steps": steps_version, "cfg": relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class PointCache:
    """Stage results of one point as JSON files in its directory."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, stage: str) -> dict[str, Any] | None:
        p = self.root / f"stage-{stage}.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def put(self, stage: str, result: dict[str, Any]) -> dict[str, Any]:
        _write_json(self.root / f"stage-{stage}.json", result)
        return result

    def stage(self, stage: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        cached = self.get(stage)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        out = fn()
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return self.put(stage, out)


# --- one point -----------------------------------------------------------------------------------------------------

def _hits(rows: np.ndarray, catalog: Catalog, targets: Sequence[str], k: int) -> list[float]:
    """1.0 per request whose target is among its top-k rows (recall@k with one target)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] != len(targets):
        raise ValueError(f"search returned rows of shape {rows.shape}, expected ({len(targets)}, >= {k})")
    return [recall_at_k(r, (catalog.index(t),), k) for r, t in zip(rows.tolist(), targets)]


def _interval(values: Sequence[float], cfg: SweepConfig) -> dict[str, Any]:
    return bootstrap_ci(values, seed=cfg.seed, n_resamples=cfg.n_resamples).to_json()


def point_dir(cfg: SweepConfig, size: int, catalog: Catalog, out_dir: Path, steps_version: str) -> Path:
    return out_dir / "points" / f"size-{size:06d}-{point_key(cfg, size, catalog.content_hash(), steps_version)}"


def prepare_point(cfg: SweepConfig, catalog: Catalog, pdir: Path) -> IdMap:
    """The point's inputs in its directory: catalog.jsonl, idmap.json (built once: semantic ids embed every item) and
    the training requests. A directory prepared elsewhere (e.g. on a machine with the sentence encoder, for a GPU
    machine without it) is used as it is."""
    if not (pdir / "catalog.jsonl").is_file():
        catalog.save_jsonl(pdir / "catalog.jsonl")
    idmap_path = pdir / "idmap.json"
    if idmap_path.is_file():
        idmap = IdMap.load(idmap_path)
    else:
        idmap = build_idmap(catalog, cfg.id_scheme, seed=cfg.seed, **cfg.id_params)
        idmap.save(idmap_path)
    if not (pdir / "queries.jsonl").is_file():  # training requests for recipes with the query->id task
        write_queries(training_requests(catalog, cfg), pdir / "queries.jsonl")
    return idmap


def check_recipe(cfg: SweepConfig, pdir: Path) -> None:
    """A point keeps the sha256 of the recipe file its model was trained with (`recipe.sha256`) and is refused once
    that file changes: the point key holds the recipe's path and overrides, not its contents, so an edited recipe
    would otherwise reuse models and results trained under the old one. A point without the file records it."""
    if not cfg.recipe or not Path(cfg.recipe).is_file():
        return  # no recipe (stand-in steps), or one the train step will report as missing
    from dlsearch.data.files import file_sha256

    digest, mark = file_sha256(cfg.recipe), pdir / "recipe.sha256"
    if not mark.is_file():
        atomic_write_text(mark, f"{digest}  {cfg.recipe}\n")
        return
    kept = mark.read_text(encoding="utf-8").split()
    if kept and kept[0] != digest:
        raise ValueError(f"{cfg.recipe} changed since the point {pdir} was trained with it (sha256 {kept[0][:12]}, now "
                         f"{digest[:12]}): give the sweep another `out` for the new recipe, or delete {pdir} to retrain")


def training_time(model_dir: Path) -> dict[str, Any]:
    """{"model_dir"} plus, when the recipe wrote run_summary.json, its stages' training time summed over every
    segment of a resumed run (finetune.train.TrainingClock): the stage's own wall time would count only the last
    process, and any time it was stopped."""
    out: dict[str, Any] = {"model_dir": str(model_dir)}
    summary = Path(model_dir, "run_summary.json")
    stages = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else []
    if stages and all("train_cpu_seconds" in s and s.get("segments_complete", True) for s in stages):
        out["train_seconds"] = round(sum(s["train_seconds"] for s in stages), 1)
        out["train_cpu_seconds"] = round(sum(s["train_cpu_seconds"] for s in stages), 1)
        out["train_segments"] = sum(len(s["segments"]) for s in stages)
        out["train_bf16"] = sorted({b for s in stages for b in s["segments_bf16"]})
    return out


def run_point(cfg: SweepConfig, size: int, real: Catalog, steps: SweepSteps, out_dir: Path, *, on_gpu: bool) -> dict[str, Any]:
    """Measure one catalog size (cached stage by stage under out_dir/points/)."""
    catalog = catalog_at(real, size, seed=cfg.seed, real_items=cfg.real_items)
    n_synth = sum(1 for it in catalog if it.meta.get("synthetic"))
    chash = catalog.content_hash()
    pdir = point_dir(cfg, size, catalog, out_dir, steps.version)
    head = {"size": size, "n_items": len(catalog), "synthetic_items": n_synth, "catalog_hash": chash, "dir": str(pdir)}
    if size > cfg.cpu_max_size and not on_gpu:
        return {**head, "status": "skipped", "reason": f"left to a GPU run: size {size} > cpu_max_size {cfg.cpu_max_size} on a CPU-only machine"}
    cache = PointCache(pdir)
    idmap = prepare_point(cfg, catalog, pdir)
    check_recipe(cfg, pdir)
    requests = held_out_requests(catalog, cfg.n_requests, seed=cfg.seed, keep=cfg.request_title_keep, n_concepts=cfg.request_concepts)
    texts, targets = [r[0] for r in requests], [r[1] for r in requests]

    train = cache.stage("train", lambda: training_time(steps.train(catalog, idmap, pdir / "model", cfg)))
    model_dir = Path(train["model_dir"])

    def memorization() -> dict[str, Any]:
        ids = memorization_sample(catalog, cfg.memorization_sample, seed=cfg.seed)
        gen = steps.generate_ids(model_dir, catalog, idmap, [catalog[i].title for i in ids])
        expected = [idmap.code(i) for i in ids]
        named = [idmap.lookup(g) if g is not None else None for g in gen]
        return {"n": len(ids), "exact_match": exact_match(gen, expected), "valid_rate": valid_item_rate(named, set(catalog.ids)),
                "exact_match_ci": _interval([float(g is not None and g.strip() == e) for g, e in zip(gen, expected)], cfg),
                "valid_rate_ci": _interval([float(n is not None) for n in named], cfg), "examples": list(zip(expected[:5], gen[:5]))}

    mem = cache.stage("memorization", memorization)

    def searched(search: SearchFn) -> dict[str, Any]:
        _, rows = search(texts, cfg.k)
        hits = _hits(rows, catalog, targets, cfg.k)
        return {"recall": _interval(hits, cfg), "hits": hits}

    direct: SearchFn = lambda q, k: steps.direct_search(model_dir, catalog, idmap, list(q), k, cfg)  # noqa: E731
    built: dict[str, SearchFn] = {}  # searchers built at most once per point (a dual encoder trains when built)

    def fallback(name: str) -> SearchFn:
        if name not in built:
            built[name] = steps.fallback(name, catalog, pdir / f"fallback-{name}", cfg)
        return built[name]

    def router() -> SearchFn:
        if "router" not in built:
            memo = {"exact_match": mem["exact_match"], "valid_rate": mem["valid_rate"], "n_items": len(catalog)}
            built["router"] = steps.router(model_dir, catalog, idmap, {n: fallback(n) for n in cfg.fallbacks}, memo, pdir / "router", cfg)
        return built["router"]

    recall = {"direct": cache.stage("direct", lambda: searched(direct))}
    for name in cfg.fallbacks:
        recall[name] = cache.stage(f"fallback-{name}", lambda name=name: searched(fallback(name)))
    if cfg.router:
        if steps.router is None:
            raise ValueError("cfg.router is true but no router step is available (retrieval area); set router: false")
        recall["router"] = cache.stage("router", lambda: searched(router()))

        if cfg.router_validation:
            def run_validated() -> dict[str, Any]:
                # model selection on validation requests (never a test phrasing): each single strategy and the
                # memorization-policy router compete; the winner answers the held-out requests
                candidates: dict[str, SearchFn] = {"router": router(), "direct": direct, **{n: fallback(n) for n in cfg.fallbacks}}
                val = validation_requests(catalog, cfg)
                vtexts, vtargets = [t for t, _ in val], [i for _, i in val]
                scores = {name: float(np.mean(_hits(fn(vtexts, cfg.k)[1], catalog, vtargets, cfg.k))) for name, fn in candidates.items()}
                chosen = max(scores, key=lambda n: scores[n])  # ties: the first listed (router, direct, fallbacks)
                out = searched(candidates[chosen])
                return {**out, "chosen": chosen, "validation_recall": scores, "n_validation": len(val)}

            recall["router-validated"] = cache.stage("router-validated", run_validated)
    return {**head, "status": "done", "memorization": {k: mem[k] for k in ("n", "exact_match", "valid_rate", "exact_match_ci", "valid_rate_ci")},
            f"recall@{cfg.k}": {name: r["recall"] for name, r in recall.items()},
            # train: the recipe's own clock over every resumed segment when it wrote one, else this stage's wall time
            "train_clock": "train_seconds" in train,  # False: seconds.train is the train stage's wall time (pauses too)
            "seconds": {"train": train.get("train_seconds", train.get("seconds")), "memorization": mem.get("seconds"), **{n: r.get("seconds") for n, r in recall.items()}},
            **({"router_validated": {k: recall["router-validated"][k] for k in ("chosen", "validation_recall", "n_validation")}}
               if "router-validated" in recall else {})}


# --- the whole sweep -------------------------------------------------------------------------------------------------

def crossover(points: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """First measured size where the best fallback's recall@k exceeds direct search, with a log-size interpolation."""
    key = f"recall@{k}"
    done = [p for p in points if p.get("status") == "done"]
    prev = None
    for p in done:
        r = p[key]
        fb = {n: v["mean"] for n, v in r.items() if n != "direct" and not n.startswith("router")}
        if not fb:
            return {"size": None, "reason": "no fallback measured"}
        best = max(fb, key=lambda n: fb[n])
        gap = fb[best] - r["direct"]["mean"]  # > 0: the fallback wins
        if gap > 0:
            out = {"size": p["size"], "fallback": best, "gap": gap}
            if prev is not None and prev[1] <= 0:
                (s0, g0), (s1, g1) = prev, (p["size"], gap)
                t = -g0 / (g1 - g0) if g1 != g0 else 0.0
                out["interpolated_size"] = float(math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0))))
            elif prev is None:
                out["note"] = "the fallback already wins at the smallest size measured"
            return out
        prev = (p["size"], gap)
    return {"size": None, "reason": "direct search stays at or above every fallback over the measured sizes" if done else "no point measured"}


def memorization_limit(points: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Up to what catalog size the model names items itself: the largest measured size whose exact-match memorization
    is >= threshold before it first falls below, and the log-size interpolation of where it crosses the threshold."""
    done = [p for p in points if p.get("status") == "done"]
    out: dict[str, Any] = {"threshold": threshold, "size": None}
    prev = None
    for p in done:
        em = p["memorization"]["exact_match"]
        if em < threshold:
            if prev is None:
                out["reason"] = f"exact match is below {threshold} already at the smallest size measured ({p['size']:,}: {em:.3f})"
            else:
                (s0, e0), (s1, e1) = prev, (p["size"], em)
                t = (e0 - threshold) / (e0 - e1) if e0 != e1 else 0.0
                out.update(size=s0, falls_below_at=s1, interpolated_size=float(math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))))
            return out
        prev = (p["size"], em)
    if prev is not None:
        out.update(size=prev[0], reason=f"exact match stays >= {threshold} over every measured size")
    else:
        out["reason"] = "no point measured"
    return out


def real_catalog(cfg: SweepConfig) -> Catalog:
    """The catalog the sweep's points are cut from: `catalog` (any catalog file, or a prepared dir), else MovieLens."""
    if not cfg.catalog:
        from dlsearch.data.movielens import load_movielens  # foundation area

        return load_movielens(cfg.data or None)[0]
    from dlsearch.data.loaders import load_catalog

    path = Path(cfg.catalog)
    if path.is_dir():
        if not (path / "catalog.jsonl").is_file():
            raise FileNotFoundError(f"sweep catalog {path}: a folder without catalog.jsonl (name a catalog file, or a "
                                    "`dlsearch data prepare --out` dir)")
        path = path / "catalog.jsonl"
    catalog = load_catalog(path, cfg.catalog_columns or None, concept_sep=cfg.concept_sep)
    if len(catalog) < 2:
        raise ValueError(f"sweep catalog {path}: {len(catalog)} item(s); a sweep needs at least 2")
    return catalog


def run_sweep(cfg: SweepConfig, steps: SweepSteps, *, real: Catalog | None = None, on_gpu: bool | None = None,
              config_path: str | None = None) -> dict[str, Any]:
    """Run (or resume) every point, then write sweep.json, sweep.csv and sweep.png under cfg.out."""
    if real is None:
        real = real_catalog(cfg)
    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", config_to_dict(cfg))
    points = []
    t0 = time.perf_counter()
    for size in tqdm(cfg.point_sizes(), desc=f"sweep {cfg.name}", unit="point"):
        points.append(run_point(cfg, size, real, steps, out_dir, on_gpu=on_gpu))
    result = {
        "name": cfg.name, "config": config_to_dict(cfg), "config_path": config_path, "seed": cfg.seed, "k": cfg.k,
        "real_catalog": {"items": len(real), "hash": real.content_hash(), "source": cfg.catalog or cfg.data or "movielens (bundled)"}, "on_gpu": on_gpu, "points": points,
        "crossover": crossover(points, cfg.k), "memorization_limit": memorization_limit(points, cfg.trust_exact_match),
        # wall_seconds: this invocation only (a resumed sweep reads finished stages back); stage_seconds: what every
        # stage of every point cost when it ran, i.e. the sweep's compute whatever the number of resumes
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "stage_seconds": round(sum(v or 0.0 for p in points for v in p.get("seconds", {}).values()), 2),
    }
    _write_json(out_dir / "sweep.json", result)
    write_sweep_csv(result, out_dir / "sweep.csv")
    (out_dir / "sweep.md").write_text(sweep_markdown(result), encoding="utf-8")
    plot_sweep(result, out_dir / "sweep.png")
    return result


def _strategies(result: dict[str, Any]) -> list[str]:
    key = f"recall@{result['k']}"
    names: dict[str, None] = {}
    for p in result["points"]:
        names.update(dict.fromkeys(p.get(key, {})))
    return list(names)


def write_sweep_csv(result: dict[str, Any], path: Path) -> None:
    import csv

    key = f"recall@{result['k']}"
    strategies = _strategies(result)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["size", "synthetic_items", "status", "exact_match", "exact_match_low", "exact_match_high", "valid_rate"]
                   + [f"{key}_{s}{suf}" for s in strategies for suf in ("", "_low", "_high")])
        for p in result["points"]:
            if p["status"] != "done":
                w.writerow([p["size"], p["synthetic_items"], p["status"]])
                continue
            m = p["memorization"]
            row = [p["size"], p["synthetic_items"], "done", m["exact_match"], m["exact_match_ci"]["low"], m["exact_match_ci"]["high"], m["valid_rate"]]
            for s in strategies:
                iv = p[key].get(s)
                row += [iv["mean"], iv["low"], iv["high"]] if iv else ["", "", ""]
            w.writerow(row)


def _fmt_interval(iv: dict[str, Any] | None) -> str:
    return "—" if iv is None else f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def sweep_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the sweep table: size, memorization, valid rate, recall@k per strategy, training seconds.
    A point that was not run has its reason in the third cell and empty cells after it."""
    key = f"recall@{result['k']}"
    strategies = _strategies(result)
    head = ["size", "synthetic", "exact match", "valid (no constraint)"] + [f"{key} {s}" for s in strategies] + ["train s"]
    rows = []
    for p in result["points"]:
        cells = [f"{p['size']:,}", f"{p['synthetic_items']:,}"]
        if p["status"] != "done":
            rows.append(cells + [p["reason"]] + [""] * (len(head) - 3))
            continue
        m = p["memorization"]
        cells += [_fmt_interval(m["exact_match_ci"]), _fmt_interval(m["valid_rate_ci"])]
        rows.append(cells + [_fmt_interval(p[key].get(s)) for s in strategies] + [f"{p['seconds'].get('train') or 0:,.0f}"])
    return head, rows


def sweep_summary(result: dict[str, Any]) -> list[str]:
    """The crossover and the memorization limit, one sentence each."""
    cx, lim = result["crossover"], result.get("memorization_limit") or {}
    if cx.get("size"):
        where = (f"at or below {cx['size']:,} (smallest size measured; ahead by {cx['gap']:.3f} recall@{result['k']})"
                 if "note" in cx else f"{cx['size']:,}")
        if "interpolated_size" in cx:
            where += f" (interpolated ≈ {cx['interpolated_size']:,.0f})"
        lines = [f"Crossover: {cx['fallback']} overtakes direct search {where}."]
    else:
        lines = [f"Crossover: none — {cx.get('reason', '')}."]
    if "interpolated_size" in lim:
        lines.append(f"Memorization limit: exact match >= {lim['threshold']} up to {lim['size']:,} items, below at "
                     f"{lim['falls_below_at']:,} (interpolated ≈ {lim['interpolated_size']:,.0f}).")
    elif lim:
        lines.append(f"Memorization limit: {lim.get('reason', '')}.")
    return lines


def markdown_table(head: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A Markdown table with lines of notes below it."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def sweep_markdown(result: dict[str, Any]) -> str:
    """The sweep's table as Markdown (for READMEs and issue notes), with the crossover and memorization limit below."""
    return markdown_table(*sweep_table(result), sweep_summary(result))


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Two panels against catalog size (log x): memorization; recall@k per strategy with 95 % bands and the crossover."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"recall@{result['k']}"
    done = [p for p in result["points"] if p["status"] == "done"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    if done:
        x = [p["size"] for p in done]
        for label, k_mean, k_ci in (("exact-match memorization", "exact_match", "exact_match_ci"), ("valid-item rate (no constraint)", "valid_rate", "valid_rate_ci")):
            y = [p["memorization"][k_mean] for p in done]
            lo = [p["memorization"][k_ci]["low"] for p in done]
            hi = [p["memorization"][k_ci]["high"] for p in done]
            ax1.plot(x, y, marker="o", label=label)
            ax1.fill_between(x, lo, hi, alpha=0.2)
        for s in _strategies(result):
            pts = [(p["size"], p[key][s]) for p in done if s in p[key]]
            xs = [a for a, _ in pts]
            ax2.plot(xs, [b["mean"] for _, b in pts], marker="o", label=s, linestyle="-" if s == "direct" else "--")
            ax2.fill_between(xs, [b["low"] for _, b in pts], [b["high"] for _, b in pts], alpha=0.15)
    lim = result.get("memorization_limit") or {}
    if lim.get("threshold") is not None and done:
        ax1.axhline(lim["threshold"], color="grey", linewidth=0.8, linestyle=":")
        if "interpolated_size" in lim:
            ax1.axvline(lim["interpolated_size"], color="black", linestyle=":", label=f"exact match < {lim['threshold']} beyond ≈ {lim['interpolated_size']:,.0f}")
    cx = result["crossover"]
    if cx.get("size"):
        at = cx.get("interpolated_size", cx["size"])
        label = (f"{cx['fallback']} ahead from the smallest size (crossover <= {at:,.0f})" if "note" in cx
                 else f"crossover ≈ {at:,.0f} ({cx['fallback']})")
        ax2.axvline(at, color="black", linestyle=":", label=label)
    sizes = [p["size"] for p in done]
    for ax, title in ((ax1, "memorization"), (ax2, f"{key} on held-out requests")):
        ax.set_xscale("log")
        if sizes:  # label the measured sizes themselves, not powers of ten
            ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
            ax.minorticks_off()
        ax.set_xlabel("catalog size (items)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    skipped = [p["size"] for p in result["points"] if p["status"] == "skipped"]
    fig.suptitle(f"sweep {result['name']}" + (f" (sizes {skipped} left to a GPU run)" if skipped else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_sweep(result: dict[str, Any], console: Any = None) -> None:
    """The sweep table (sweep_table) on the terminal, then the crossover and memorization limit (sweep_summary)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 150))
    head, rows = sweep_table(result)
    table = Table(title=f"sweep {result['name']}: memorization and recall@{result['k']} against catalog size")
    for col in head:
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for line in sweep_summary(result):
        console.print(line)


# --- several sweeps on one chart -------------------------------------------------------------------------------------

# what may differ between runs merged into one series: where they ran and which sizes each covered
SERIES_FREE_KEYS = ("name", "out", "sizes", "synthetic_sizes", "cpu_max_size")


def config_with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A sweep.json's config with every SweepConfig setting it lacks at today's default: a sweep written before a
    setting existed (e.g. `catalog`, `concept_sep`) ran as that default does."""
    defaults = {f.name: (f.default_factory() if f.default is MISSING else f.default)
                for f in fields(SweepConfig) if f.default is not MISSING or f.default_factory is not MISSING}
    return {**defaults, **config}


def load_sweep_result(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no sweep.json (a `dlsearch sweep` out dir, finished at least once)")
    return json.loads(path.read_text(encoding="utf-8"))


def compare_sweeps(runs: Sequence[tuple[str | None, str | Path]]) -> dict[str, Any]:
    """Sweeps side by side: (label, out dir) pairs (label None: the sweep's own name); dirs given the same label are
    one series, their points merged
    (e.g. the 1,000-, 4,000- and 6,300-item points of one setting, each run as its own sweep). A series must share
    every setting but SERIES_FREE_KEYS and the real catalog, and measure each size once; its memorization limit is
    recomputed over the merged points."""
    series: dict[str, dict[str, Any]] = {}
    for label, out_dir in runs:
        res = load_sweep_result(out_dir)
        label = label or res["name"]
        s = series.setdefault(label, {"label": label, "dirs": [], "points": [], "k": res["k"], "config": res["config"],
                                      "real_catalog": res["real_catalog"]["hash"]})
        cfg = {k: v for k, v in config_with_defaults(res["config"]).items() if k not in SERIES_FREE_KEYS}
        ref = {k: v for k, v in config_with_defaults(s["config"]).items() if k not in SERIES_FREE_KEYS}
        if cfg != ref or res["real_catalog"]["hash"] != s["real_catalog"] or res["k"] != s["k"]:
            diff = sorted(k for k in set(cfg) | set(ref) if cfg.get(k) != ref.get(k)) or ["real catalog / k"]
            raise ValueError(f"series {label!r}: {out_dir} differs from {s['dirs'][0]} in {diff}; give it its own label")
        sizes = {p["size"] for p in s["points"]}
        for p in res["points"]:
            if p["status"] != "done":
                continue
            if p["size"] in sizes:
                raise ValueError(f"series {label!r}: size {p['size']} is measured in {out_dir} and in another of its dirs")
            s["points"].append({**p, "from": str(out_dir)})
        s["dirs"].append(str(out_dir))
    for s in series.values():
        s["points"].sort(key=lambda p: p["size"])
        s["memorization_limit"] = memorization_limit(s["points"], s["config"].get("trust_exact_match", 0.8))
    return {"series": list(series.values())}


def comparison_table(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per series and size: exact match, direct search's recall@k, training seconds."""
    head = ["series", "size", "exact match", "recall@k direct", "best fallback", "train s"]
    rows = []
    for s in cmp["series"]:
        key = f"recall@{s['k']}"
        for p in s["points"]:
            others = {n: iv for n, iv in p[key].items() if n not in ("direct", "router", "router-validated")}
            best = max(others, key=lambda n: others[n]["mean"]) if others else None
            rows.append([s["label"], f"{p['size']:,}", _fmt_interval(p["memorization"]["exact_match_ci"]),
                         _fmt_interval(p[key].get("direct")), f"{best} {others[best]['mean']:.3f}" if best else "—",
                         f"{p['seconds'].get('train') or 0:,.0f}" + ("" if p.get("train_clock") else "*")])
    return head, rows


def comparison_summary(cmp: dict[str, Any]) -> list[str]:
    out = []
    if any(not p.get("train_clock") for s in cmp["series"] for p in s["points"]):
        out.append("train s marked *: the train stage's wall time of its last run (any pause included; a point trained "
                   "before the recipe's training clock, finetune segments.json); the others sum every training segment.")
    for s in cmp["series"]:
        lim = s["memorization_limit"]
        if "interpolated_size" in lim:
            out.append(f"{s['label']}: exact match >= {lim['threshold']} up to {lim['size']:,} items, below at "
                       f"{lim['falls_below_at']:,} (interpolated ≈ {lim['interpolated_size']:,.0f}).")
        else:
            out.append(f"{s['label']}: {lim.get('reason', 'no point measured')}.")
    return out


def plot_comparison(cmp: dict[str, Any], path: Path) -> None:
    """Exact-match memorization and direct search's recall@k against catalog size (log x), one line per series, 95 %
    bands, the trust threshold and each series' interpolated limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes: set[int] = set()
    for n, s in enumerate(cmp["series"]):
        pts, color = s["points"], f"C{n}"
        x = [p["size"] for p in pts]
        sizes.update(x)
        m = [p["memorization"] for p in pts]
        ax1.plot(x, [v["exact_match"] for v in m], marker="o", color=color, label=s["label"])
        ax1.fill_between(x, [v["exact_match_ci"]["low"] for v in m], [v["exact_match_ci"]["high"] for v in m], color=color, alpha=0.15)
        lim = s["memorization_limit"]
        if "interpolated_size" in lim:
            ax1.axvline(lim["interpolated_size"], color=color, linestyle=":", linewidth=1)
        key = f"recall@{s['k']}"
        d = [(p["size"], p[key]["direct"]) for p in pts if "direct" in p[key]]
        ax2.plot([a for a, _ in d], [b["mean"] for _, b in d], marker="o", color=color, label=s["label"])
        ax2.fill_between([a for a, _ in d], [b["low"] for _, b in d], [b["high"] for _, b in d], color=color, alpha=0.15)
    threshold = cmp["series"][0]["memorization_limit"]["threshold"] if cmp["series"] else 0.8
    ax1.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
    k = cmp["series"][0]["k"] if cmp["series"] else 10
    for ax, title in ((ax1, f"exact-match memorization (dotted: < {threshold} beyond)"), (ax2, f"direct search recall@{k}, held-out requests")):
        ax.set_xscale("log")
        if sizes:
            ax.set_xticks(sorted(sizes), [f"{v:,}" for v in sorted(sizes)], rotation=45, fontsize=7)
            ax.minorticks_off()
        ax.set_xlabel("catalog size (items)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison(cmp: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """compare.json, compare.md (table and limits) and compare.png under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md", "plot": out_dir / "compare.png"}
    _write_json(paths["json"], cmp)
    atomic_write_text(paths["markdown"], markdown_table(*comparison_table(cmp), comparison_summary(cmp)))
    plot_comparison(cmp, paths["plot"])
    return paths
