"""Training and evaluation examples as `datasets.Dataset` in prompt/completion form (what trl's SFTTrainer takes).

Every row: `prompt`, `completion`, `task`, `item_id` (the target item), `source_id` (item, turn or user it comes
from). All text comes from data/prompts.py, the template shared with inference.

    ds = indexing_examples(catalog, idmap)                        # title->id, id->title, item->concepts
    ds = conversation_examples(turns, catalog, idmap)             # conversation->item at recommender turns
    ds = conversation_examples(turns, catalog, idmap, task="conversation->mention")  # the user's own mentions
    ds = history_examples(histories, catalog, idmap, "test")      # history->next_item
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from dlsearch.data.catalog import Catalog, Item, split_title_year
from dlsearch.data.formats import Conversation
from dlsearch.data.ids import IdMap
from dlsearch.data.prompts import (CONCEPT_SEP, LengthBudget, conversation_parts, conversation_prompt, make_completion,
                                   prompt_for_context, prompt_for_item_task, render_history)
from dlsearch.data.turns import all_recommender_turns, seeker_turns

if TYPE_CHECKING:  # datasets is imported lazily: importing data.examples stays cheap
    import datasets

COLUMNS = ("prompt", "completion", "task", "item_id", "source_id")
INDEXING_TASKS = ("title->id", "id->title", "item->concepts")
CONVERSATION_TASKS = ("conversation->item", "conversation->concepts", "conversation->query", "conversation->mention")
QUERY_CONCEPTS = 3  # concepts in a search query: genres first, they are the most general
HISTORY_CONTEXT = 20  # items of history shown in a history->next_item prompt (the most recent ones)


def to_dataset(rows: Sequence[dict[str, str]]) -> "datasets.Dataset":
    """Rows -> datasets.Dataset with exactly COLUMNS (also when empty)."""
    import datasets

    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})


def _row(example: dict[str, str], task: str, item_id: str, source_id: str) -> dict[str, str]:
    return {**example, "task": task, "item_id": item_id, "source_id": source_id}


def indexing_rows(catalog: Catalog, idmap: IdMap, tasks: Sequence[str] = INDEXING_TASKS) -> list[dict[str, str]]:
    """title->id and id->title for every item; item->concepts for every item that has concepts."""
    bad = [t for t in tasks if t not in INDEXING_TASKS]
    if bad:
        raise ValueError(f"not indexing tasks: {bad}; choose from {list(INDEXING_TASKS)}")
    idmap.check_catalog(catalog)
    rows = []
    for it in catalog:
        for task in tasks:
            if task == "item->concepts" and not it.concepts:
                continue
            ex = prompt_for_item_task(task, title=it.title, code=idmap.code(it.id), concepts=it.concepts)
            rows.append(_row(ex, task, it.id, it.id))
    return rows


def indexing_examples(catalog: Catalog, idmap: IdMap, tasks: Sequence[str] = INDEXING_TASKS) -> "datasets.Dataset":
    """Catalog-indexing examples (see indexing_rows) as a Dataset."""
    return to_dataset(indexing_rows(catalog, idmap, tasks))


def search_query(item: Item, n_concepts: int = QUERY_CONCEPTS) -> str:
    """A short search query for an item: its title words (no year) and its top concepts."""
    base, _ = split_title_year(item.title)
    concepts = list(item.meta.get("genres") or []) + [c for c in item.concepts if c not in (item.meta.get("genres") or [])]
    return " ".join([" ".join(base.split())] + concepts[:n_concepts])


def conversation_rows(convs: Iterable[Conversation], catalog: Catalog, idmap: IdMap, task: str = "conversation->item",
                      render: str = "title", max_messages: int | None = None,
                      length: LengthBudget | None = None) -> list[dict[str, str]]:
    """One row per (recommender turn, target). Records without targets are whole dialogues: they are cut into
    recommender turns first (data/turns.py). conversation->concepts skips targets without concepts.
    With a length budget, contexts are cut from the left to fit (data.prompts.fit_context_prompt) and rows that
    cannot fit are dropped; both are counted in length.counts."""
    if task not in CONVERSATION_TASKS:
        raise ValueError(f"not a conversation task: {task!r}; choose from {list(CONVERSATION_TASKS)}")
    convs = list(convs)
    if task == "conversation->mention":  # the user's own mentions: more item-association rows from the same dialogues
        turns = seeker_turns(convs)
    else:
        turns = [c for c in convs if c.targets] + all_recommender_turns(c for c in convs if not c.targets)
    if render not in ("title", "id"):
        raise ValueError(f"render must be 'title' or 'id', got {render!r}")
    rows = []
    for turn in turns:
        prompt = conversation_prompt(turn, catalog, task, render=render, idmap=idmap, max_messages=max_messages)
        for target in turn.targets:
            if task == "conversation->mention" and target not in catalog:  # a user may name an item outside the
                continue                                                    # catalog: no answer to learn
            item = catalog[target]
            if task in ("conversation->item", "conversation->mention"):
                answer = idmap.code(target)
            elif task == "conversation->concepts":
                if not item.concepts:
                    continue
                answer = CONCEPT_SEP.join(item.concepts)
            else:
                answer = search_query(item)
            completion = make_completion(answer)
            fitted = prompt if length is None else length.fit(task, conversation_parts(turn, catalog, render=render, idmap=idmap,
                                                                                        max_messages=max_messages), completion)
            if fitted is not None:
                rows.append({"prompt": fitted, "completion": completion, "task": task, "item_id": target, "source_id": turn.id})
    return rows


def conversation_examples(convs: Iterable[Conversation], catalog: Catalog, idmap: IdMap, task: str = "conversation->item",
                          render: str = "title", max_messages: int | None = None,
                          length: LengthBudget | None = None) -> "datasets.Dataset":
    """Conversation examples (see conversation_rows) as a Dataset."""
    return to_dataset(conversation_rows(convs, catalog, idmap, task, render, max_messages, length))


def history_rows(histories: dict[str, list[tuple[str, int]]], catalog: Catalog, idmap: IdMap, split: str = "test",
                 render: str = "title", context: int = HISTORY_CONTEXT, train_targets: int = 20,
                 length: LengthBudget | None = None) -> list[dict[str, str]]:
    """history->next_item rows. For "validation"/"test" (lists from split_histories) the last event is the target;
    for "train" each of the last `train_targets` positions of a user's training events is a target (all of them
    would be ~100k near-duplicate prompts on MovieLens). The prompt lists up to `context` previous items, oldest
    first, one per line."""
    rows = []
    for user, events in histories.items():
        positions = range(max(1, len(events) - train_targets), len(events)) if split == "train" else [len(events) - 1]
        for t in positions:
            if t < 1:
                continue
            items = [i for i, _ in events[max(0, t - context):t]]
            target = events[t][0]
            completion = make_completion(idmap.code(target))
            if length is None:
                prompt = prompt_for_context("history->next_item", render_history(items, catalog, render=render, idmap=idmap))
            else:  # whole items are cut from the left first, like messages
                prompt = length.fit("history->next_item", [render_history([i], catalog, render=render, idmap=idmap) for i in items], completion)
                if prompt is None:
                    continue
            rows.append({"prompt": prompt, "completion": completion, "task": "history->next_item",
                         "item_id": target, "source_id": f"user:{user}:{t}"})
    return rows


def history_examples(histories: dict[str, list[tuple[str, int]]], catalog: Catalog, idmap: IdMap, split: str = "test",
                     render: str = "title", context: int = HISTORY_CONTEXT, train_targets: int = 20,
                     length: LengthBudget | None = None) -> "datasets.Dataset":
    """history->next_item examples (see history_rows) as a Dataset."""
    return to_dataset(history_rows(histories, catalog, idmap, split, render, context, train_targets, length))
