"""Uncertainty for per-query metric scores: seeded bootstrap intervals and paired tests against a baseline.

Every number in an evaluation table is a mean over queries; `bootstrap_ci` gives its 95 % percentile interval.
Turns of one ReDial dialogue are not independent, so both functions accept `groups` (e.g. the dialogue id of each
turn) and then resample or flip whole groups (a cluster bootstrap / cluster randomization test) instead of turns.

`paired_test` compares two systems on the same queries: the mean of the per-query differences, its bootstrap
interval, and a two-sided p-value from a paired randomization (sign-flip) test — under the null hypothesis the two
systems are exchangeable on every query, so each difference is equally likely to have either sign.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
_CHUNK = 256  # resamples per vectorized block: bounds memory at _CHUNK x n_queries floats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    confidence: float
    n: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class PairedTest:
    diff: float  # mean(a - b)
    low: float  # bootstrap interval of the difference
    high: float
    p_value: float  # two-sided, paired randomization test
    method: str
    n_resamples: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _as_scores(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one score per query (1-D), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty: no queries, no interval")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf")
    return v


def _group_sums(values: np.ndarray, groups: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """(sum per group, size per group); without groups every query is its own group."""
    if groups is None:
        return values, np.ones_like(values)
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} group labels for {len(values)} scores")
    _, inv = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    sums = np.bincount(inv, weights=values)
    sizes = np.bincount(inv).astype(np.float64)
    return sums, sizes


def _bootstrap_means(values: np.ndarray, groups: Sequence[Any] | None, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """n_resamples means of the scores, each from len(groups) groups drawn with replacement."""
    sums, sizes = _group_sums(values, groups)
    g = len(sums)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK):
        m = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, g, size=(m, g))
        out[start : start + m] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)  # ratio estimator: mean per query
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> Interval:
    """Percentile bootstrap interval of the mean of per-query scores (resampling groups when given).

    Args:
        values: one score per query.
        confidence: e.g. 0.95 for a 95 % interval.
        n_resamples: bootstrap resamples; 1000 gives intervals stable to about +-0.005 on recall@10.
        seed: the same seed and inputs give the same interval.
        groups: optional label per query (e.g. dialogue id); whole groups are resampled.
    Raises:
        ValueError: empty or non-finite scores, a confidence outside (0, 1), too few resamples.
    """
    v = _as_scores(values)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 10:
        raise ValueError(f"n_resamples must be >= 10, got {n_resamples}")
    means = _bootstrap_means(v, groups, n_resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(v.mean()), float(low), float(high), confidence, int(v.size))


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES * 10,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> PairedTest:
    """Paired comparison of system a against system b on the same queries (a's scores minus b's).

    The p-value is two-sided from a randomization test that flips the sign of each query's (or each group's)
    difference at random: p = (1 + #{|mean of flipped| >= |observed mean|}) / (1 + n_resamples), so it is never 0.
    The interval is a percentile bootstrap of the mean difference.
    Raises:
        ValueError: the score arrays differ in length, are empty or non-finite.
    """
    va, vb = _as_scores(a, "a"), _as_scores(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired scores must align query by query: {va.size} vs {vb.size}")
    d = va - vb
    rng = np.random.default_rng(seed)
    ci = bootstrap_ci(d, confidence=confidence, n_resamples=max(DEFAULT_RESAMPLES, n_resamples // 10), seed=seed, groups=groups)
    sums, sizes = _group_sums(d, groups)
    total = sizes.sum()
    observed = abs(sums.sum() / total)
    extreme = 0
    for start in range(0, n_resamples, _CHUNK):
        m = min(_CHUNK, n_resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, len(sums)))
        flipped = np.abs(signs @ sums) / total
        extreme += int((flipped >= observed - 1e-12).sum())  # tolerance: equal means must count as extreme
    p = (1 + extreme) / (1 + n_resamples)
    return PairedTest(float(d.mean()), ci.low, ci.high, float(p), "paired randomization (sign-flip)", n_resamples)
