"""Leakage-free evaluation protocols and the report every `dlsearch evaluate` table comes from.

Two tasks, one pipeline (each query is a `Conversation` with `targets` and `exclude`):

* **ReDial turns** (`redial_turns_task`): the foundation split written by `dlsearch data prepare` — one record per
  recommender turn of a TEST dialogue; messages = the turns before it, targets = the movies mentioned in that turn,
  exclude = the movies mentioned earlier. Ranking is over the full catalog.
* **MovieLens leave-one-out** (`movielens_loo_task`): data.splits.split_histories — per user, the last rated item
  (by time) is the target, the second-to-last is validation, the rest is training; the query is the history before
  the target.

Two modes, both always reported:
* `excluded` (default, the headline): items already mentioned/consumed are removed from every ranking, and targets
  that were already mentioned are removed from the gold set (they cannot be recommended); queries left without a
  target are dropped (their count is reported).
* `included`: rankings and targets as they are.

Every table carries the baselines (training-split popularity, BM25 over the conversation text), every number a
95 % bootstrap interval (resampling whole dialogues / users), and each system a paired randomization test against
the best baseline on each metric.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
from tqdm.auto import tqdm

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.files import file_sha256  # the data hashes recorded with every result
from dlsearch.data.formats import Conversation, Message, Prediction, load_conversations, load_predictions
from dlsearch.data.titles import Titles, titles_of
from dlsearch.evaluation.baselines import BM25Search, PopularitySearch, training_counts
from dlsearch.evaluation.metrics import duplicate_rate, parse_metric, per_query_scores, valid_item_rate
from dlsearch.evaluation.stats import bootstrap_ci, paired_test

DEFAULT_METRICS = ("recall@1", "recall@10", "recall@50", "ndcg@10", "mrr")
PRIMARY_METRIC = "recall@10"
BASELINES = ("popularity", "bm25")
MODES = ("excluded", "included")
DEFAULT_DEPTH = 100  # ranking depth kept per query; MRR is MRR@depth
REDIAL_NOTE = (
    "Trained and evaluated on a split of ReDial's shipped TEST dialogues: not directly comparable to published "
    "ReDial numbers, which train on the full training split (e.g. KBRD recall@10 ~0.17-0.18)."
)


class SearchLike(Protocol):
    def search(self, queries: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]: ...


System = Union[SearchLike, Callable[[Sequence[Conversation], int], tuple[np.ndarray, np.ndarray]], Mapping[str, Prediction]]


@dataclass
class EvalTask:
    """A catalog, training-split item counts, and test queries (conversations with targets and exclude)."""

    name: str
    catalog: Catalog
    train_counts: Counter
    queries: list[Conversation]
    groups: list[str]  # per query: the dialogue / user it belongs to (bootstrap resamples whole groups)
    hashes: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.groups) != len(self.queries):
            raise ValueError(f"{len(self.groups)} groups for {len(self.queries)} queries")
        if not self.queries:
            raise ValueError(f"task {self.name}: no test queries with targets")
        for q in self.queries:
            missing = [t for t in q.targets if t not in self.catalog]
            if missing:
                raise ValueError(f"task {self.name}: query {q.id!r} has targets not in the catalog: {missing[:3]}")


def dialogue_of(conv: Conversation) -> str:
    """The dialogue a turn record belongs to: meta['dialogue_id'] when prepare wrote it, else the id before ':'."""
    for key in ("dialogue_id", "conversation_id", "dialogue"):
        if key in conv.meta:
            return str(conv.meta[key])
    return conv.id.split(":", 1)[0]


def prepared_description(prepared_dir: str | Path) -> tuple[str, str]:
    """(dataset name, protocol note) from a prepared dir's manifest: what a report says it evaluated."""
    d = Path(prepared_dir)
    man = json.loads((d / "manifest.json").read_text(encoding="utf-8")) if (d / "manifest.json").is_file() else {}
    name = man.get("dataset_name") or ("redial" if man.get("dataset") == "redial" else d.resolve().name)
    if man.get("split") == "keep":
        split = "the dataset's own split"
    elif man.get("ratios"):
        split = f"a split by dialogue/user ({'/'.join(str(round(r * 100)) for r in man['ratios'])}, seed {man.get('seed', 0)})"
    else:
        split = "the prepared split"
    note = f"Dataset {name}: test split of {split}, prepared in {d}."
    if name == "redial":
        note = REDIAL_NOTE + " " + note
    return name, note


def conversation_turns_task(prepared_dir: str | Path) -> EvalTask:
    """Recommender turns of a prepared dir's test split (`dlsearch data prepare`, any dataset); the task is named
    '<dataset>-turns' and its note describes the dataset and split, from the prepared manifest."""
    d = Path(prepared_dir)
    paths = {"catalog": d / "catalog.jsonl", "train": d / "conversations" / "train.jsonl", "test": d / "conversations" / "test.jsonl"}
    for p in paths.values():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; run `dlsearch data prepare --dataset <your data> --out {d}` first")
    catalog = load_catalog_jsonl(paths["catalog"])
    train = load_conversations(paths["train"])
    test = [c for c in load_conversations(paths["test"]) if c.targets]
    train_dialogues = {dialogue_of(c) for c in train}
    leaked = sorted({dialogue_of(c) for c in test} & train_dialogues)
    if leaked:
        raise ValueError(f"{d}: dialogues in both train and test splits (e.g. {leaked[:3]}): the split leaks")
    counts = training_counts(train)
    name, note = prepared_description(d)
    return EvalTask(
        name=f"{name}-turns", catalog=catalog, train_counts=counts, queries=test, groups=[dialogue_of(c) for c in test],
        hashes={"catalog": catalog.content_hash(), **{f"{k}_file": file_sha256(p) for k, p in paths.items() if k != "catalog"}},
        note=note,
    )


redial_turns_task = conversation_turns_task  # the name earlier code and docs use


def prepared_histories_task(prepared_dir: str | Path, *, text_items: int = 20) -> EvalTask:
    """Leave-one-out next item on a prepared dir's histories (histories/train.jsonl and test.jsonl as prepare split
    them), named '<dataset>-next-item'."""
    from dlsearch.data.catalog import read_jsonl

    d = Path(prepared_dir)
    for split in ("train", "test"):
        if not (d / "histories" / f"{split}.jsonl").is_file():
            raise FileNotFoundError(f"{d / 'histories' / (split + '.jsonl')}: missing; the prepared dir has no histories")
    catalog = load_catalog_jsonl(d / "catalog.jsonl")
    read = lambda s: {str(r["id"]): [(str(i), int(t)) for i, t in r["events"]] for _, r in read_jsonl(d / "histories" / f"{s}.jsonl")}  # noqa: E731
    train, test = read("train"), read("test")
    task = _loo_task(catalog, train, test, text_items=text_items)
    name, note = prepared_description(d)
    task.name, task.note = f"{name}-next-item", note
    task.hashes.update({f"histories_{s}_file": file_sha256(d / "histories" / f"{s}.jsonl") for s in ("train", "test")})
    return task


def movielens_loo_task(catalog: Catalog, histories: Mapping[str, Sequence[tuple[str, int]]], *, text_items: int = 20) -> EvalTask:
    """Leave-one-out next item: the query is the user's history before the last item, rendered as @<id> mentions
    (the last `text_items` of them in the text; all of them in `exclude`)."""
    from dlsearch.data.splits import split_histories  # foundation: the one leave-one-out split every area uses

    splits = split_histories({u: list(e) for u, e in histories.items()})
    task = _loo_task(catalog, splits["train"], splits["test"], text_items=text_items)
    h = hashlib.sha256(json.dumps({u: list(map(list, e)) for u, e in sorted(histories.items())}).encode()).hexdigest()
    task.hashes["histories"] = h
    return task


def _loo_task(catalog: Catalog, train: Mapping[str, Sequence[tuple[str, int]]], test: Mapping[str, Sequence[tuple[str, int]]],
              *, text_items: int) -> EvalTask:
    from dlsearch.data.formats import format_mention

    counts: Counter = Counter()
    for events in train.values():
        counts.update(i for i, _ in events if i in catalog)
    queries, groups = [], []
    for user in sorted(test, key=lambda u: (len(u), u)):
        events = test[user]  # ends with the test target
        before, target = [i for i, _ in events[:-1]], events[-1][0]
        text = "I rated " + ", ".join(format_mention(i) for i in before[-text_items:])
        queries.append(Conversation(id=f"user{user}", messages=[Message("user", text)], exclude=list(dict.fromkeys(before)),
                                    targets=[target], meta={"user": user}))
        groups.append(user)
    return EvalTask(name="movielens-loo", catalog=catalog, train_counts=counts, queries=queries, groups=groups,
                    hashes={"catalog": catalog.content_hash()})


def baseline_systems(task: EvalTask, *, bm25_max_messages: int | None = None) -> dict[str, System]:
    """The two baselines every table carries, built on the task's catalog and training split."""
    return {"popularity": PopularitySearch(task.catalog, {i: c for i, c in task.train_counts.items() if i in task.catalog}),
            "bm25": BM25Search(task.catalog, max_messages=bm25_max_messages)}


Ranked = tuple[list[str], list[float]]


def excludes_itself(system: System) -> bool:
    """True for systems that always drop `conversation.exclude` themselves (decoding's direct search masks them in
    beam search; the router removes them): asked for `depth` items only, and left out of the 'included' mode."""
    return bool(getattr(system, "masks_exclusions", False) or getattr(system, "removes_exclusions", False))


def rank_queries(task: EvalTask, system: System, depth: int, *, batch_size: int = 128, desc: str = "") -> list[Ranked]:
    """Each query's ranking (item ids, scores), best first: enough entries that `depth` survive exclusion."""
    if isinstance(system, Mapping):
        out = []
        for q in task.queries:
            pred = system.get(q.id)
            items = sorted(pred.items, key=lambda s: s.rank) if pred is not None else []
            out.append(([s.item_id for s in items], [s.score for s in items]))
        return out
    search = system.search if hasattr(system, "search") else system
    max_excl = 0 if excludes_itself(system) else max(len(q.exclude) for q in task.queries)
    k = min(len(task.catalog), depth + max_excl)
    ids = task.catalog.ids
    out = []
    for start in tqdm(range(0, len(task.queries), batch_size), desc=desc or "rank", leave=False, disable=len(task.queries) <= batch_size):
        batch = task.queries[start : start + batch_size]
        scores, rows = search(batch, k)
        scores, rows = np.asarray(scores), np.asarray(rows)
        if rows.shape != (len(batch), k) or scores.shape != rows.shape:
            raise ValueError(f"{desc}: search returned shapes {scores.shape}/{rows.shape}, expected ({len(batch)}, {k})")
        for r, s in zip(rows.tolist(), scores.tolist()):
            keep = [(ids[i], sc) for i, sc in zip(r, s) if i >= 0]
            out.append(([x for x, _ in keep], [sc for _, sc in keep]))
    return out


def excluded_mode_targets(titles: Titles, q: Conversation) -> list[str]:
    """The targets a query is scored on in the 'excluded' mode: those not excluded, nor in an excluded item's duplicate
    group (data/titles.py); a query left with none is not scored in that mode."""
    excl = titles.excluded_ids(q.exclude)
    return [t for t in dict.fromkeys(q.targets) if t not in excl]


def mode_view(task: EvalTask, rankings: Sequence[Ranked], mode: str, depth: int) -> tuple[list[int], list[Ranked], list[list[str]]]:
    """(kept query indices, rankings cut to depth, gold sets) under mode 'excluded' or 'included'."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    kept, ranked, gold = [], [], []
    titles = titles_of(task.catalog)
    for n, (q, (items, scores)) in enumerate(zip(task.queries, rankings)):
        if mode == "excluded":
            targets = excluded_mode_targets(titles, q)
            if not targets:
                continue
            keep = titles.keep_ids(items, q.exclude)  # no excluded group, one member per group
            items, scores = [items[j] for j in keep], [scores[j] for j in keep]
        else:
            targets = list(dict.fromkeys(q.targets))
        kept.append(n)
        ranked.append((items[:depth], scores[:depth]))
        gold.append(targets)
    return kept, ranked, gold


def evaluate_systems(
    task: EvalTask,
    systems: Mapping[str, System],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    depth: int = DEFAULT_DEPTH,
    modes: Sequence[str] = MODES,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    n_resamples: int = 1000,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank every query with every system and score them; returns the report (JSON-able dict).

    Args:
        systems: name -> search object / callable in the shared search shape, or id -> Prediction (a predictions file).
        baselines: which of the systems are baselines; the best of them (by the first metric in `metrics` that is
            PRIMARY_METRIC, else the first metric) is the reference of every paired test.

    A metric cutting deeper than a system's lists is not scored for that system (recall@50 of 10-item lists is
    recall@10 under another name): a search system's lists are `depth` long, a predictions file's as long as its
    longest list (the k it was generated with). Its entry lists them under `not_scored`, next to `list_length`.

    Raises:
        ValueError: no baseline among the systems, an unknown metric or mode, a primary metric deeper than `depth`.
    """
    present = [b for b in baselines if b in systems]
    if not present:
        raise ValueError(f"no baseline among the systems {list(systems)}; every table carries one of {list(baselines)}")
    primary = PRIMARY_METRIC if PRIMARY_METRIC in metrics else metrics[0]
    if (parse_metric(primary)[1] or 0) > depth:
        raise ValueError(f"metric {primary} cuts deeper than the ranking depth {depth}: raise depth or lower the cutoff")
    rankings = {name: rank_queries(task, sys, depth, desc=name) for name, sys in systems.items()}
    list_length = {name: max((len(items) for items, _ in rankings[name]), default=0) if isinstance(sys, Mapping) else depth
                   for name, sys in systems.items()}
    scored = {name: [m for m in metrics if (parse_metric(m)[1] or 0) <= list_length[name]] for name in systems}
    report: dict[str, Any] = {
        "task": task.name, "seed": seed, "n_resamples": n_resamples, "depth": depth, "metrics": list(metrics),
        "primary_metric": primary, "baselines": present, "config": dict(config or {}), "hashes": task.hashes,
        "note": task.note, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "catalog_items": len(task.catalog), "modes": {},
    }
    for mode in modes:
        per_system: dict[str, dict[str, np.ndarray]] = {}
        views = {}
        in_mode = {n: r for n, r in rankings.items() if mode == "excluded" or not excludes_itself(systems[n])}
        for name, ranks in in_mode.items():
            kept, ranked, gold = mode_view(task, ranks, mode, depth)
            views[name] = (kept, ranked)
            per_system[name] = {m: per_query_scores([r[0] for r in ranked], gold, m) for m in scored[name]}
        groups = [task.groups[i] for i in kept]
        best = max(present, key=lambda b: (per_system[b][primary].mean(), -present.index(b)))
        out_sys = {}
        for name in in_mode:
            entries = [e for items, _ in rankings[name] for e in items[:depth]]
            entry = {
                "baseline": name in present,
                "metrics": {m: bootstrap_ci(v, seed=seed, n_resamples=n_resamples, groups=groups).to_json() for m, v in per_system[name].items()},
                "valid_item_rate": valid_item_rate(entries, set(task.catalog.ids)) if entries else None,
                "duplicate_rate": duplicate_rate([items[:depth] for items, _ in rankings[name]]) if entries else None,
                "queries_without_prediction": sum(1 for items, _ in rankings[name] if not items),
                "list_length": list_length[name], "not_scored": [m for m in metrics if m not in scored[name]],
            }
            if name != best:
                entry["vs_best_baseline"] = {
                    m: paired_test(per_system[name][m], per_system[best][m], seed=seed, n_resamples=n_resamples * 10, groups=groups).to_json()
                    for m in scored[name] if m in per_system[best]
                }
            out_sys[name] = entry
        report["modes"][mode] = {
            "n_queries": len(kept), "dropped_queries": len(task.queries) - len(kept), "n_groups": len(set(groups)),
            "best_baseline": best, "systems": out_sys,
            "_runs": {name: (views[name][0], views[name][1]) for name in in_mode},  # for the TREC file; not in JSON
            "not_in_mode": sorted(set(systems) - set(in_mode)),  # systems that always exclude: only in 'excluded' 
        }
    return report


def _trec_token(text: str) -> str:
    return re.sub(r"\s+", "_", text) or "_"


def write_report(report: dict[str, Any], task: EvalTask, out_dir: str | Path) -> dict[str, Path]:
    """results.json, results.csv (one row per mode x system x metric), run-<mode>.trec; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv"}
    clean = {**report, "modes": {m: {k: v for k, v in d.items() if k != "_runs"} for m, d in report["modes"].items()}}
    paths["json"].write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task", "mode", "system", "baseline", "metric", "mean", "low", "high", "n_queries",
                    "best_baseline", "diff_vs_best", "diff_low", "diff_high", "p_value", "seed"])
        for mode, d in report["modes"].items():
            for name, s in d["systems"].items():
                for m, iv in s["metrics"].items():
                    t = s.get("vs_best_baseline", {}).get(m, {})
                    w.writerow([report["task"], mode, name, s["baseline"], m, iv["mean"], iv["low"], iv["high"], d["n_queries"],
                                d["best_baseline"], t.get("diff", ""), t.get("low", ""), t.get("high", ""), t.get("p_value", ""), report["seed"]])
    for mode, d in report["modes"].items():
        p = out / f"run-{mode}.trec"
        with open(p, "w", encoding="utf-8") as f:
            for name, (kept, ranked) in d["_runs"].items():
                for qi, (items, scores) in zip(kept, ranked):
                    seen: set[str] = set()
                    rank = 0
                    for item, score in zip(items, scores):
                        if item in seen:  # trec_eval refuses repeated documents; metrics already count them once
                            continue
                        seen.add(item)
                        rank += 1
                        sc = score if math.isfinite(score) else -1e30
                        f.write(f"{_trec_token(task.queries[qi].id)} Q0 {_trec_token(item)} {rank} {sc:.6g} {_trec_token(name)}\n")
        paths[f"trec_{mode}"] = p
    return paths


class TrecRun:
    """One system's saved ranking (a run-<mode>.trec that `write_report` wrote) in the search shape: the same lists
    for the same queries, so a finished run can be scored again, e.g. as the reference of a paired test
    (`evaluate_systems(task, {"a": TrecRun(f, cat, "a"), "b": TrecRun(f, cat, "b")}, baselines=("b",))`)."""

    masks_exclusions = True  # the file holds the lists as evaluated (excluded mode): do not score it in 'included'

    def __init__(self, path: str | Path, catalog: Catalog, system: str):
        self.catalog, self.titles = catalog, titles_of(catalog)
        ids = {_trec_token(i): i for i in catalog.ids}  # the file's tokens back to item ids
        self.lists: dict[str, list[tuple[str, float]]] = {}
        self.scored: set[str] = set()  # queries any system of the file has: scored, even where this one found nothing
        names = set()
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if len(parts) != 6:
                    raise ValueError(f"{path}:{n}: expected 6 fields (qid Q0 item rank score system), got {len(parts)}")
                qid, _, item, _, score, name = parts
                names.add(name)
                self.scored.add(qid)
                if name != system:
                    continue
                if item not in ids:
                    raise ValueError(f"{path}:{n}: item {item!r} is not in the catalog: the run was made on another catalog")
                self.lists.setdefault(qid, []).append((ids[item], float(score)))  # written best first
        if not self.lists:
            raise ValueError(f"{path}: no system {system!r} in the file; it has {sorted(names)}")

    def search(self, queries: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for qi, q in enumerate(queries):
            qid = _trec_token(q.id)
            ranked = self.lists.get(qid)
            if ranked is None:  # a list writes no line when it is empty; a query no system has was not scored
                if qid in self.scored or not excluded_mode_targets(self.titles, q):
                    continue  # found nothing / every target already mentioned (not scored in 'excluded')
                raise ValueError(f"query {q.id!r} is not in the run file: it was evaluated on other turns")
            for j, (item, s) in enumerate(ranked[:k]):
                rows[qi, j], scores[qi, j] = self.catalog.index(item), s
        return scores, rows


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """One rich table per mode: each metric as mean [95 % CI], and the primary metric's paired test vs the best baseline."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 150))  # pipes default to 80 columns: too narrow
    primary = report["primary_metric"]
    for mode, d in report["modes"].items():
        best = d["best_baseline"]
        title = (f"{report['task']} — {mode} already-seen items — {d['n_queries']} queries "
                 f"({d['n_groups']} groups), catalog {report['catalog_items']}")
        table = Table(title=title, caption=" ".join(x for x in [
            f"* baseline. 95% bootstrap intervals over groups, seed {report['seed']}; paired randomization test vs best baseline ({best}).",
            report.get("note", "")] if x))
        table.add_column("system")
        for m in report["metrics"]:
            table.add_column(m, justify="right", no_wrap=True)
        table.add_column(f"Δ{primary} vs {best} (p)", justify="right")
        for name, s in d["systems"].items():
            row = [name + (" *" if s["baseline"] else "")]
            for m in report["metrics"]:
                iv = s["metrics"].get(m)
                row.append(f"n/a ({s['list_length']}-item lists)" if iv is None
                           else f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]")
            t = s.get("vs_best_baseline", {}).get(primary)
            row.append("—" if t is None else f"{t['diff']:+.3f} (p{_p_text(t['p_value'])})")
            table.add_row(*row)
        console.print(table)


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def predictions_system(path: str | Path) -> tuple[str, dict[str, Prediction], str]:
    """(system name, id -> Prediction, sha256) from a predictions JSONL file; the name is the strategy of its items
    when they all name the same one, else the file stem."""
    preds = load_predictions(path)
    by_id: dict[str, Prediction] = {}
    for p in preds:
        if p.id in by_id:
            raise ValueError(f"{path}: prediction id {p.id!r} appears twice")
        by_id[p.id] = p
    strategies = {s.strategy for p in preds for s in p.items} - {""}  # "": a plain ranked list names no strategy
    name = strategies.pop() if len(strategies) == 1 else Path(path).stem
    return name, by_id, file_sha256(path)
