"""bench/power_from_paired.py turns a paired test's interval into "how far from p < 0.05": its normal approximation
must agree with the production randomization test, at the observed size and at the size it extrapolates to."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from dlsearch.evaluation.stats import paired_test

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "power_from_paired.py"
spec = importlib.util.spec_from_file_location("power_from_paired", SCRIPT)
power = importlib.util.module_from_spec(spec)
spec.loader.exec_module(power)


def _hits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall-like 0/1 scores of two systems on n turns in dialogues of 2-3 turns, A better by ~0.035."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n), rng.integers(2, 4, size=n))[:n]
    b = (rng.random(n) < 0.125).astype(float)
    a = np.where(rng.random(n) < 0.6, b, (rng.random(n) < 0.21).astype(float))
    return a, b, groups


def test_normal_approximation_matches_the_randomization_test():
    a, b, g = _hits(384, seed=2)
    t = paired_test(a, b, groups=g, seed=0, n_resamples=20_000)
    row = power.power_row(t.diff, t.low, t.high, 384)
    # close, and on the optimistic side: the sign-flip null is a little wider than the bootstrap interval
    assert 0.01 < t.p_value < 0.5 and 0 <= t.p_value - row["normal_p"] < 0.04
    assert math.isclose(row["min_diff_p05"], 1.959964 * row["se"]) and row["min_diff_power80"] > row["min_diff_p05"]
    # the same turns twice over (new dialogue ids): the SE shrinks by sqrt(2), as the extrapolation assumes
    a2, b2, g2 = np.tile(a, 2), np.tile(b, 2), np.concatenate([g, g + g.max() + 1])
    t2 = paired_test(a2, b2, groups=g2, seed=0, n_resamples=20_000)
    predicted = math.erfc(abs(row["z"]) * math.sqrt(2) / math.sqrt(2))
    assert abs(t2.p_value - predicted) < 0.01 and t2.p_value < t.p_value
    # at turns_for_p05 the observed difference sits at z = 1.96
    assert math.isclose(row["z"] * math.sqrt(row["turns_for_p05"] / 384), 1.959964, rel_tol=1e-9)


def test_cli_reads_paired_rows_and_names_a_missing_metric(tmp_path):
    rows = {"n_queries": 384, "rows": [{"metric": "recall@10", "a": "direct", "b": "popularity", "diff": 0.033,
                                        "low": -0.001, "high": 0.072, "p_value": 0.08}]}
    (tmp_path / "p.json").write_text(json.dumps(rows))
    out = tmp_path / "power.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "p.json"), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    r = json.loads(out.read_text())[0]
    assert "direct vs popularity" in proc.stdout and round(r["turns_for_p05"]) == 470 and math.isclose(r["min_diff_p05"], 0.0365)
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "p.json"), "--metric", "mrr"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no row for metric 'mrr'" in bad.stderr
