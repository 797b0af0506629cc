"""Catalog, id map and per-task example tables for a recipe's `data:` section.

Loaders and example builders come from the foundation package (data.movielens, data.redial, data.examples);
this module picks them per task and restricts conversations/histories to their training split.
Example columns: prompt, completion, task, item_id, source_id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.finetune.config import DataConfig

INDEXING_TASKS = ("title->id", "id->title", "item->concepts")


# --- catalogs ------------------------------------------------------------------------------------------------------

def load_source(cfg: DataConfig) -> tuple[Catalog, IdMap, dict[str, Any]]:
    """(catalog restricted to max_items, its id map, raw extras such as histories or conversations)."""
    extras: dict[str, Any] = {}
    if cfg.dataset == "movielens":
        from dlsearch.data.movielens import load_movielens

        catalog, histories = load_movielens()
        extras["histories"] = histories
    elif cfg.dataset == "redial":
        from dlsearch.data.redial import load_redial

        if cfg.max_items is not None:
            raise ValueError("data.max_items: not supported for redial (conversations mention the whole catalog); use null")

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
    idmap = build_idmap(catalog, cfg.id_scheme, seed=cfg.id_seed, **cfg.id_params)
    return catalog, idmap, extras


# --- examples ---------------------------------------------------------------------------------------------------

def catalog_text_examples(catalog: Catalog) -> Dataset:
    """Plain item text as a completion with an empty prompt: language modeling over the catalog."""
    rows: dict[str, list[str]] = {"prompt": [], "completion": [], "task": [], "item_id": [], "source_id": []}
    for it in catalog:
        text = it.title + (": " + ", ".join(it.concepts) if it.concepts else "") + (". " + it.text if it.text else "")
        for k, v in (("prompt", ""), ("completion", text), ("task", "catalog_text"), ("item_id", it.id), ("source_id", it.id)):
            rows[k].append(v)
    return Dataset.from_dict(rows)


QUERIES_FILE = "queries.jsonl"


def query_examples(root: Path, catalog: Catalog, idmap: IdMap) -> Dataset:
    """DSI's retrieval task: training queries for items, from <root>/queries.jsonl (one {"query", "item_id"} per line).

    A query is phrased in the title->id prompt (the query stands where the title would), so a model trained on
    both tasks answers titles and free-text requests with the same prompt, which is how direct search queries it."""
    from dlsearch.data.prompts import prompt_for_item_task

    path = root / QUERIES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"task 'query->id' needs {path} (one JSON object with 'query' and 'item_id' per line)")
    rows: dict[str, list[str]] = {"prompt": [], "completion": [], "task": [], "item_id": [], "source_id": []}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                query, item_id = rec["query"], rec["item_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with 'query' and 'item_id' ({e})") from None
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"{path}:{n}: 'query' must be a non-empty string")
            if item_id not in catalog:
                raise ValueError(f"{path}:{n}: item_id {item_id!r} is not in the catalog")
            ex = prompt_for_item_task("title->id", title=query, code=idmap.code(item_id))
            for k, v in (("prompt", ex["prompt"]), ("completion", ex["completion"]), ("task", "query->id"), ("item_id", item_id), ("source_id", f"q{n}")):
                rows[k].append(v)
    return Dataset.from_dict(rows)


def _cap(ds: Dataset, n: int | None, seed: int = 0) -> Dataset:
    return ds.shuffle(seed=seed).select(range(n)) if n is not None and len(ds) > n else ds


def task_examples(task: str, catalog: Catalog, idmap: IdMap, extras: dict[str, Any], cfg: DataConfig) -> Dataset:
    """All training examples of one task (training splits only for conversations and histories)."""
    from dlsearch.data.examples import conversation_examples, history_examples, indexing_examples

    if task == "catalog_text":
        return catalog_text_examples(catalog)
    if task == "query->id":
        if cfg.dataset in ("movielens", "redial"):
            raise ValueError(f"task 'query->id' reads {QUERIES_FILE} from a prepared dir; data.dataset is {cfg.dataset!r}")
        return _cap(query_examples(Path(cfg.dataset), catalog, idmap), cfg.max_examples_per_task)
    if task in INDEXING_TASKS:
        return indexing_examples(catalog, idmap, tasks=(task,))
    if task == "history->next_item":
        if "histories" not in extras:
            raise ValueError(f"task {task!r} needs user histories; data.dataset {cfg.dataset!r} has none (use movielens)")
        from dlsearch.data.splits import split_histories

        # Only events on catalog items (max_items may cut the catalog); leave-one-out training events.
        hist = {u: [e for e in ev if e[0] in catalog] for u, ev in extras["histories"].items()}
        train = split_histories({u: ev for u, ev in hist.items() if len(ev) >= 2})["train"]
        ds = history_examples(train, catalog, idmap, split="train", context=cfg.max_history)
        return _cap(ds, cfg.max_examples_per_task)
    if task.startswith("conversation->"):
        if "conversations" not in extras:
            raise ValueError(f"task {task!r} needs conversations; data.dataset {cfg.dataset!r} has none (use redial)")
        from dlsearch.data.splits import split_conversations
        from dlsearch.data.turns import as_turn_records

        # Split the recommender-turn records, exactly as `dlsearch data prepare` does: splitting whole dialogues
        # would shuffle a different id list and train on prepare's test dialogues.
        train = split_conversations(as_turn_records(extras["conversations"]))["train"]
        ds = conversation_examples(train, catalog, idmap, task=task, max_messages=cfg.max_messages)
        return _cap(ds, cfg.max_examples_per_task)
    raise ValueError(f"no example builder for task {task!r}")
