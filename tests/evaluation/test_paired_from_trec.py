"""bench/paired_from_trec.py re-pairs two systems of a finished evaluation from its TREC file: against the report's
own reference it must reproduce the report's paired test exactly (same queries, groups, seed and resamples)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dlsearch.evaluation import protocol as P

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "paired_from_trec.py"


def test_reproduces_the_reports_paired_test(redial_prepared, tmp_path) -> None:
    task = P.conversation_turns_task(redial_prepared)
    report = P.evaluate_systems(task, P.baseline_systems(task), seed=0, n_resamples=100, modes=["excluded"])
    paths = P.write_report(report, task, tmp_path / "ev")
    d = report["modes"]["excluded"]
    assert d["dropped_queries"] > 0  # turns whose targets were all mentioned: absent from the run file, dropped again
    best = d["best_baseline"]
    other = next(s for s in d["systems"] if s != best)
    out = tmp_path / "paired.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(redial_prepared), "--run", str(paths["trec_excluded"]),
                           "--a", other, "--b", best, "--n-resamples", "100", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    rows = {r["metric"]: r for r in json.loads(out.read_text())["rows"]}
    for m in ("recall@10", "ndcg@10"):
        want = d["systems"][other]["vs_best_baseline"][m]
        assert rows[m]["diff"] == want["diff"] and rows[m]["p_value"] == want["p_value"]
        assert rows[m]["mean_a"] == d["systems"][other]["metrics"][m]["mean"]
    assert f"{d['n_queries']} queries" in proc.stdout


def test_names_the_missing_system(redial_prepared, tmp_path) -> None:
    task = P.conversation_turns_task(redial_prepared)
    paths = P.write_report(P.evaluate_systems(task, P.baseline_systems(task), n_resamples=50, modes=["excluded"]), task, tmp_path / "ev")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(redial_prepared), "--run", str(paths["trec_excluded"]),
                           "--a", "router", "--b", "popularity"], capture_output=True, text=True)
    assert proc.returncode != 0 and "no system 'router'" in proc.stderr and "bm25" in proc.stderr
