"""Splits written once by `prepare` and used by every later step.

Conversations split by dialogue (default 80/10/10, seed 0): every turn of a dialogue lands in the same split.
Histories split leave-one-out by time: per user the last interaction is the test target, the second-to-last the
validation target, the rest is training. Users with fewer than 3 interactions stay in training only.

The checkers raise `LeakageError` when a split leaks; tests call them on real splits and on a deliberately leaky one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dlsearch.data.formats import Conversation

SPLITS = ("train", "validation", "test")
Events = list[tuple[str, int]]


class LeakageError(ValueError):
    """The same dialogue, or a user's held-out interaction, appears in two splits."""


def dialogue_id(conv: Conversation) -> str:
    """The dialogue a record belongs to: meta['dialogue_id'] for recommender turns, else its own id."""
    return str(conv.meta.get("dialogue_id", conv.id))


def split_conversations(convs: Sequence[Conversation], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                        seed: int = 0) -> dict[str, list[Conversation]]:
    """Split records by dialogue: dialogue ids (in first-seen order) are shuffled under `seed` and cut by `ratios`."""
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    ids = list(dict.fromkeys(dialogue_id(c) for c in convs))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(ratios[0] * len(ids)))
    n_val = int(round(ratios[1] * len(ids)))
    where = {}
    for rank, k in enumerate(order):
        where[ids[k]] = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    for c in convs:
        out[where[dialogue_id(c)]].append(c)
    return out


def keep_split(convs: Sequence[Conversation]) -> dict[str, list[Conversation]]:
    """The dataset's own split (`prepare --split keep`): meta["split"] of every record, set from a `split` field or
    column or from the file it came from (train|dev|valid|validation|test). A record without one is an error."""
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    for c in convs:
        s = c.meta.get("split")
        if s not in out:
            raise ValueError(f"--split keep: conversation {dialogue_id(c)!r} has no split (give every conversation a "
                             "'split' field or column, or put them in train/dev/test files), or use --split seeded")
        out[s].append(c)
    return out


def split_histories(histories: dict[str, Events]) -> dict[str, dict[str, Events]]:
    """Leave-one-out by time. Returns {"train": user -> training events,
    "validation": user -> events up to and including the validation target (the last element),
    "test": user -> events up to and including the test target (the last element)}."""
    out: dict[str, dict[str, Events]] = {s: {} for s in SPLITS}
    for user, events in histories.items():
        events = sorted(events, key=lambda e: (e[1], e[0]))
        if len(events) < 3:
            out["train"][user] = events
            continue
        out["train"][user] = events[:-2]
        out["validation"][user] = events[:-1]
        out["test"][user] = events
    return out


def check_conversation_splits(splits: dict[str, Sequence[Conversation]]) -> None:
    """Raise LeakageError if a dialogue has records in two splits."""
    seen: dict[str, str] = {}
    for name, convs in splits.items():
        for c in convs:
            d = dialogue_id(c)
            if seen.setdefault(d, name) != name:
                raise LeakageError(f"dialogue {d!r} appears in splits {seen[d]!r} and {name!r} (record {c.id!r})")


def check_history_splits(splits: dict[str, dict[str, Events]]) -> None:
    """Raise LeakageError if a user's held-out interaction (validation or test target) is visible where it must
    not be: in training, or (for the test target) anywhere in validation."""
    for user, events in splits.get("test", {}).items():
        target = tuple(events[-1])
        if target in map(tuple, splits.get("train", {}).get(user, [])) or target in map(tuple, splits.get("validation", {}).get(user, [])):
            raise LeakageError(f"user {user!r}: test interaction {target} also appears in train/validation")
    for user, events in splits.get("validation", {}).items():
        target = tuple(events[-1])
        if target in map(tuple, splits.get("train", {}).get(user, [])):
            raise LeakageError(f"user {user!r}: validation interaction {target} also appears in train")
