"""Paired comparison of any two systems of a finished `dlsearch evaluate` run, from its TREC file.

The report tests every system against the best *baseline* only (popularity or BM25). This reads the run file the
evaluation wrote (run-excluded.trec), rebuilds the same task from the prepared dir, and scores the two saved rankings
again through the production evaluation with B as the only baseline: the same paired randomization test, dialogue
groups and seed, for system A against system B (e.g. the router against the dual encoder: does fusing direct search
in add anything beyond noise?).

    python bench/paired_from_trec.py --data runs/redial_pre_e3/data \
        --run runs/redial_pre_e3/eval/testall-step1200-lp0.0-b20/run-excluded.trec --a router --b dual

A against the report's own reference (e.g. --a direct --b popularity) reproduces the report's p-value: a check.
Prints a table and, with --out, writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlsearch.evaluation.protocol import TrecRun, conversation_turns_task, evaluate_systems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the prepared dir the run was evaluated on")
    ap.add_argument("--run", type=Path, required=True, help="run-excluded.trec written by dlsearch evaluate")
    ap.add_argument("--a", required=True, help="system A (its scores minus B's)")
    ap.add_argument("--b", required=True, help="system B")
    ap.add_argument("--metrics", nargs="+", default=["recall@10", "ndcg@10"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples; the paired test uses 10x (as the report)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    task = conversation_turns_task(a.data)
    try:
        systems = {name: TrecRun(a.run, task.catalog, name) for name in (a.a, a.b)}
    except ValueError as e:
        raise SystemExit(str(e)) from None
    # B as the only baseline: the report's paired test of A is then A against B
    mode = evaluate_systems(task, systems, metrics=a.metrics, baselines=(a.b,), modes=["excluded"], seed=a.seed,
                            n_resamples=a.n_resamples)["modes"]["excluded"]
    sa, sb = mode["systems"][a.a], mode["systems"][a.b]
    rows = [{"metric": m, "a": a.a, "b": a.b, "mean_a": sa["metrics"][m]["mean"], "mean_b": sb["metrics"][m]["mean"],
             **sa["vs_best_baseline"][m]} for m in a.metrics]
    print(f"{a.run} ({mode['n_queries']} queries, {mode['n_groups']} dialogues): {a.a} vs {a.b}")
    print(f"{'metric':<11}{a.a:>12}{a.b:>12}{'diff':>9}{'95% CI':>20}{'p':>9}")
    for r in rows:
        ci = f"[{r['low']:+.3f}, {r['high']:+.3f}]"
        print(f"{r['metric']:<11}{r['mean_a']:>12.3f}{r['mean_b']:>12.3f}{r['diff']:>+9.3f}{ci:>20}{r['p_value']:>9.4f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"run": str(a.run), "mode": "excluded", "n_queries": mode["n_queries"], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
