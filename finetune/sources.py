"""Catalog, id map and per-task example tables for a recipe's `data:` section.

The foundation package (data.movielens, data.redial, data.examples) provides the loaders and example builders;
until a module is on main, the small local stand-ins below are used in its place (checked explicitly with
importlib, never by swallowing import errors). Example columns: prompt, completion, task, item_id, source_id.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from datasets import Dataset

from data.catalog import Catalog, load_catalog_jsonl
from data.ids import IdMap, build_idmap
from data.prompts import make_completion, prompt_for_context, prompt_for_item_task
from finetune.config import DataConfig

INDEXING_TASKS = ("title->id", "id->title", "item->concepts")


def _has(module: str) -> bool:
    """True when `module` exists in THIS checkout's data package (an editable install elsewhere does not count)."""
    import data

    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is not None and Path(spec.origin).parent == Path(data.__file__).parent


# --- catalogs ------------------------------------------------------------------------------------------------------

def load_source(cfg: DataConfig) -> tuple[Catalog, IdMap, dict[str, Any]]:
    """(catalog restricted to max_items, its id map, raw extras such as histories or conversations)."""
    extras: dict[str, Any] = {}
    if cfg.dataset == "movielens":
        from data.movielens import load_movielens

        catalog, histories = load_movielens()
        extras["histories"] = histories
    elif cfg.dataset == "redial":
        from data.redial import load_redial

        catalog, convs = load_redial()
        extras["conversations"] = convs
    else:
        root = Path(cfg.dataset)
        if not (root / "catalog.jsonl").exists():
            raise FileNotFoundError(f"data.dataset: {root} is neither movielens, redial nor a prepared dir with catalog.jsonl")
        catalog = load_catalog_jsonl(root / "catalog.jsonl")
        if (root / "idmap.json").exists() and cfg.max_items is None:
            idmap = IdMap.load(root / "idmap.json")
            idmap.check_catalog(catalog)
            return catalog, idmap, extras
    if cfg.max_items is not None:
        catalog = catalog.subset(catalog.ids[: cfg.max_items])
    idmap = build_idmap(catalog, cfg.id_scheme, seed=cfg.id_seed)
    return catalog, idmap, extras


# --- examples ------------------------------------------------------------------------------------------------------

def _indexing_examples_local(catalog: Catalog, idmap: IdMap, tasks: tuple[str, ...]) -> Dataset:
    rows: dict[str, list[str]] = {"prompt": [], "completion": [], "task": [], "item_id": [], "source_id": []}
    for task in tasks:
        for it in catalog:
            if task == "item->concepts" and not it.concepts:
                continue
            ex = prompt_for_item_task(task, title=it.title, code=idmap.code(it.id), concepts=it.concepts)
            for k, v in (*ex.items(), ("task", task), ("item_id", it.id), ("source_id", it.id)):
                rows[k].append(v)
    return Dataset.from_dict(rows)


def _history_examples_local(histories: dict[str, list[tuple[str, int]]], catalog: Catalog, idmap: IdMap,
                            *, max_history: int, max_examples: int | None) -> Dataset:
    """history->next_item: every position but the last of each user (the last is held out, leave-one-out)."""
    rows: dict[str, list[str]] = {"prompt": [], "completion": [], "task": [], "item_id": [], "source_id": []}
    for user, hist in sorted(histories.items(), key=lambda x: int(x[0]) if x[0].isdigit() else x[0]):
        seq = [i for i, _ in hist if i in catalog]
        for t in range(1, len(seq) - 1):
            ctx = "\n".join(catalog[i].title for i in seq[max(0, t - max_history): t])
            rows["prompt"].append(prompt_for_context("history->next_item", ctx))
            rows["completion"].append(make_completion(idmap.code(seq[t])))
            rows["task"].append("history->next_item")
            rows["item_id"].append(seq[t])
            rows["source_id"].append(f"{user}:{t}")
    ds = Dataset.from_dict(rows)
    if max_examples is not None and len(ds) > max_examples:
        ds = ds.shuffle(seed=0).select(range(max_examples))
    return ds


def catalog_text_examples(catalog: Catalog) -> Dataset:
    """Plain item text as a completion with an empty prompt: language modeling over the catalog."""
    rows: dict[str, list[str]] = {"prompt": [], "completion": [], "task": [], "item_id": [], "source_id": []}
    for it in catalog:
        text = it.title + (": " + ", ".join(it.concepts) if it.concepts else "") + (". " + it.text if it.text else "")
        for k, v in (("prompt", ""), ("completion", text), ("task", "catalog_text"), ("item_id", it.id), ("source_id", it.id)):
            rows[k].append(v)
    return Dataset.from_dict(rows)


def task_examples(task: str, catalog: Catalog, idmap: IdMap, extras: dict[str, Any], cfg: DataConfig) -> Dataset:
    """All examples of one task."""
    if task == "catalog_text":
        return catalog_text_examples(catalog)
    if task in INDEXING_TASKS:
        if _has("data.examples"):
            from data.examples import indexing_examples

            return indexing_examples(catalog, idmap, tasks=(task,))
        return _indexing_examples_local(catalog, idmap, (task,))
    if task == "history->next_item":
        if "histories" not in extras:
            raise ValueError(f"task {task!r} needs user histories; data.dataset {cfg.dataset!r} has none")
        if _has("data.examples"):
            from data.examples import history_examples

            ds = history_examples(extras["histories"], catalog, idmap)
            if cfg.max_examples_per_task is not None and len(ds) > cfg.max_examples_per_task:
                ds = ds.shuffle(seed=0).select(range(cfg.max_examples_per_task))
            return ds
        return _history_examples_local(extras["histories"], catalog, idmap, max_history=cfg.max_history,
                                       max_examples=cfg.max_examples_per_task)
    if task.startswith("conversation->"):
        if "conversations" not in extras:
            raise ValueError(f"task {task!r} needs conversations; data.dataset {cfg.dataset!r} has none (use redial)")
        from data.examples import conversation_examples

        ds = conversation_examples(extras["conversations"], catalog, idmap, task=task)
        if cfg.max_examples_per_task is not None and len(ds) > cfg.max_examples_per_task:
            ds = ds.shuffle(seed=0).select(range(cfg.max_examples_per_task))
        return ds
    raise ValueError(f"no example builder for task {task!r}")
