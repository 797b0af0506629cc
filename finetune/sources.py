"""Catalog, id map and per-task example tables for a recipe's `data:` section, read from ONE prepared dir.

`data.dataset` is a prepared dir (`dlsearch data prepare --out DIR`): its catalog.jsonl, idmap.json and the
training split it wrote (conversations/train.jsonl, histories/train.jsonl) are used as they are, never re-split.
The names `redial` and `movielens` are prepared first, by the same `prepare`, into <output_dir>/data (split seed
data.id_seed), so that a later `evaluate` on that dir tests exactly what was held out.
A dir with only catalog.jsonl + idmap.json (a sweep point) serves the catalog tasks.
Example columns: prompt, completion, task, item_id, source_id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from dlsearch.data.catalog import Catalog, load_catalog_jsonl, read_jsonl
from dlsearch.data.ids import IdMap
from dlsearch.finetune.config import DataConfig

INDEXING_TASKS = ("title->id", "id->title", "item->concepts")


# --- catalogs ------------------------------------------------------------------------------------------------------

def prepared_dir_for(cfg: DataConfig, output_dir: str | Path | None = None) -> Path:
    """The prepared dir a recipe reads: data.dataset itself, or for `redial` / `movielens` <output_dir>/data,
    written (or reused: prepare is re-runnable) by data.prepare."""
    if cfg.dataset not in ("redial", "movielens"):
        root = Path(cfg.dataset)
        if not (root / "catalog.jsonl").is_file() or not (root / "idmap.json").is_file():
            raise FileNotFoundError(f"data.dataset: {root} is not a prepared dir (it needs catalog.jsonl and idmap.json); "
                                    f"run `dlsearch data prepare --dataset <your data> --ids <scheme> --out {root}` first, "
                                    "or name redial or movielens")
        if cfg.max_items is not None:
            raise ValueError(f"data.max_items: a prepared dir ({root}) is used whole, with its own id map; "
                             "prepare a smaller catalog (`dlsearch data prepare --max-items N`) or set data.max_items: null")
        if cfg.histories is not None:
            raise ValueError(f"data.histories: a prepared dir ({root}) is used as it was prepared; prepare it with "
                             f"`dlsearch data prepare --histories {cfg.histories}` or set data.histories: null")
        return root
    from dlsearch.data.prepare import prepare

    out = Path(output_dir if output_dir is not None else "runs/sft") / "data"
    params = dict(cfg.id_params)
    cache_dir = params.pop("cache_dir", None)
    prepare(cfg.dataset, cfg.id_scheme, out, seed=cfg.id_seed, scheme_params=params, cache_dir=cache_dir,
            max_items=cfg.max_items, extra_histories=cfg.histories, log=lambda s: None)
    return out


def _read_conversations(path: Path) -> list[Any]:
    from dlsearch.data.formats import load_conversations

    return load_conversations(path) if path.is_file() else []


def load_source(cfg: DataConfig, output_dir: str | Path | None = None) -> tuple[Catalog, IdMap, dict[str, Any]]:
    """(catalog, id map, extras) of the prepared dir (prepared_dir_for). extras: "prepared_dir", "prepared"
    (its fingerprint, or None for a dir without manifest), "conversations" and "histories" (the TRAINING split
    prepare wrote; absent when the dir has none)."""
    from dlsearch.data.prepare import prepared_fingerprint

    root = prepared_dir_for(cfg, output_dir)
    catalog = load_catalog_jsonl(root / "catalog.jsonl", max_title_chars=None, max_text_bytes=None)
    idmap = IdMap.load(root / "idmap.json")
    idmap.check_catalog(catalog)
    extras: dict[str, Any] = {"prepared_dir": root,
                              "prepared": prepared_fingerprint(root) if (root / "manifest.json").is_file() else None}
    if (root / "conversations" / "train.jsonl").is_file():
        extras["conversations"] = _read_conversations(root / "conversations" / "train.jsonl")
    if (root / "histories" / "train.jsonl").is_file():
        extras["histories"] = {str(r["id"]): [(str(i), int(t)) for i, t in r["events"]]
                               for _, r in read_jsonl(root / "histories" / "train.jsonl")}
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


def task_examples(task: str, catalog: Catalog, idmap: IdMap, extras: dict[str, Any], cfg: DataConfig,
                  length: Any = None) -> Dataset:
    """All training examples of one task (training splits only for conversations and histories). `length` (a
    data.prompts.LengthBudget) cuts conversation and history contexts from the left to fit, counting what it cut."""
    from dlsearch.data.examples import conversation_examples, history_examples, indexing_examples

    if task == "catalog_text":
        return catalog_text_examples(catalog)
    if task == "query->id":
        root = extras.get("prepared_dir")
        if root is None:
            if cfg.dataset in ("movielens", "redial"):
                raise ValueError(f"task 'query->id' reads {QUERIES_FILE} from a prepared dir; data.dataset is {cfg.dataset!r}")
            root = cfg.dataset
        return _cap(query_examples(Path(root), catalog, idmap), cfg.max_examples_per_task)
    if task in INDEXING_TASKS:
        return indexing_examples(catalog, idmap, tasks=(task,))
    if task == "history->next_item":
        if "histories" not in extras:
            raise ValueError(f"task {task!r} needs user histories; the prepared dir {_where(extras, cfg)} has none "
                             "(add histories.<ext> to your dataset folder and prepare it again)")
        # prepare's training events (leave-one-out: validation and test targets are not in them)
        ds = history_examples(extras["histories"], catalog, idmap, split="train", context=cfg.max_history, length=length)
        return _cap(ds, cfg.max_examples_per_task)
    if task.startswith("conversation->"):
        if "conversations" not in extras:
            raise ValueError(f"task {task!r} needs conversations; the prepared dir {_where(extras, cfg)} has none "
                             "(add conversations to your dataset folder and prepare it again)")
        # prepare's training split, as written: never re-split here
        ds = conversation_examples(extras["conversations"], catalog, idmap, task=task, max_messages=cfg.max_messages, length=length)
        return _cap(ds, cfg.max_examples_per_task)
    raise ValueError(f"no example builder for task {task!r}")


def _where(extras: dict[str, Any], cfg: DataConfig) -> str:
    return str(extras.get("prepared_dir", cfg.dataset))
