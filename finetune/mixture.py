"""Weighted mixtures of example tasks.

A weight is relative to the task's own size, per epoch: 1.0 puts every example in once, 2.0 twice, 0.3 a seeded
30 % sample. That keeps the meaning of a weight stable when the catalog grows (replay of indexing tasks during a
conversation stage is `title->id: 0.3`, not an absolute count).
"""

from __future__ import annotations

import math

import numpy as np
from datasets import Dataset, concatenate_datasets

KEEP_COLUMNS = ("prompt", "completion")


def weighted_mixture(tables: dict[str, Dataset], weights: dict[str, float], *, seed: int = 0) -> Dataset:
    """Concatenate round(weight * len(table)) rows of each task (whole repeats + a seeded sample), shuffled.

    Raises:
        ValueError: a weighted task with no table, or a mixture with no rows.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for task, w in weights.items():
        if w <= 0:
            continue
        if task not in tables:
            raise ValueError(f"task {task!r} has weight {w} but no examples were built for it")
        table = tables[task].select_columns(list(KEEP_COLUMNS))
        n = len(table)
        whole, frac = int(math.floor(w)), w - math.floor(w)
        for _ in range(whole):
            parts.append(table)
        k = int(round(frac * n))
        if k:
            parts.append(table.select(np.sort(rng.choice(n, size=k, replace=False)).tolist()))
    if not parts:
        raise ValueError("the task mixture is empty: give at least one task a positive weight")
    mixed = concatenate_datasets(parts)
    return mixed.shuffle(seed=seed)
