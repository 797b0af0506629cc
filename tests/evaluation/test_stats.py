"""evaluation/stats.py: intervals cover, are seeded, widen with clustering; the paired test detects a real gap."""

from __future__ import annotations

import numpy as np
import pytest

from dlsearch.evaluation.stats import bootstrap_ci, paired_test

N = 400


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    v = np.random.default_rng(0).binomial(1, 0.2, size=N).astype(float)
    ci = bootstrap_ci(v, seed=1)
    assert ci == bootstrap_ci(v, seed=1)
    assert ci.low < ci.mean < ci.high and ci.n == N
    # binomial standard error at p=0.2, n=400 is 0.02: a 95% interval is about +-0.04 wide
    assert 0.05 < ci.high - ci.low < 0.11


def test_interval_covers_the_truth_about_95_percent() -> None:
    rng = np.random.default_rng(5)
    hits = 0
    for i in range(100):
        ci = bootstrap_ci(rng.binomial(1, 0.3, size=200).astype(float), seed=i, n_resamples=400)
        hits += ci.low <= 0.3 <= ci.high
    assert 88 <= hits <= 100


def test_groups_resample_whole_dialogues() -> None:
    # 40 dialogues of 10 identical turns: the real sample size is 40, so the cluster interval must be wider
    rng = np.random.default_rng(0)
    per_dialogue = rng.binomial(1, 0.3, size=40).astype(float)
    v = np.repeat(per_dialogue, 10)
    groups = np.repeat(np.arange(40), 10)
    wide, narrow = bootstrap_ci(v, groups=groups), bootstrap_ci(v)
    assert (wide.high - wide.low) > 2 * (narrow.high - narrow.low)


def test_paired_test_separates_a_real_gap_from_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.binomial(1, 0.2, size=N).astype(float)
    better = np.maximum(base, rng.binomial(1, 0.15, size=N))
    t = paired_test(better, base, seed=0)
    assert t.diff > 0 and t.p_value < 0.01 and t.low > 0
    noise = paired_test(rng.permutation(base), base, seed=0)
    assert noise.p_value > 0.05 or noise.low < 0 < noise.high
    same = paired_test(base, base)
    assert same.diff == 0 and same.p_value == 1.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="align"):
        paired_test([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([float("nan")])
