"""Paired comparison of any two systems of a finished `dlsearch evaluate` run, from its TREC file.

The report tests every system against the best *baseline* only (popularity or BM25). This reads the run file the
evaluation wrote (run-<mode>.trec), rebuilds the same task from the prepared dir, and runs the same paired
randomization test, with the same dialogue groups, for system A against system B: e.g. the router against the dual
encoder, to see whether fusing direct search in adds anything beyond noise.

    python bench/paired_from_trec.py --data runs/redial_pre_e3/data \
        --run runs/redial_pre_e3/eval/testall-step1200-lp0.0-b20/run-excluded.trec --a router --b dual

A against the report's own reference (e.g. --a direct --b popularity) reproduces the report's p-value: a check.
Prints a table and, with --out, writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from dlsearch.evaluation.metrics import per_query_scores
from dlsearch.evaluation.protocol import _trec_token, conversation_turns_task, mode_view
from dlsearch.evaluation.stats import paired_test


def read_trec(path: Path) -> dict[str, dict[str, list[tuple[int, str, float]]]]:
    """system -> query token -> [(rank, item token, score)] from a TREC run file."""
    runs: dict[str, dict[str, list[tuple[int, str, float]]]] = defaultdict(lambda: defaultdict(list))
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 6:
                raise ValueError(f"{path}:{n}: expected 6 fields (qid Q0 doc rank score system), got {len(parts)}")
            q, _, doc, rank, score, system = parts
            runs[system][q].append((int(rank), doc, float(score)))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the prepared dir the run was evaluated on")
    ap.add_argument("--run", type=Path, required=True, help="run-<mode>.trec written by dlsearch evaluate")
    ap.add_argument("--a", required=True, help="system A (its scores minus B's)")
    ap.add_argument("--b", required=True, help="system B")
    ap.add_argument("--mode", default=None, help="excluded | included (default: from the run file's name)")
    ap.add_argument("--metrics", nargs="+", default=["recall@10", "ndcg@10"])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-resamples", type=int, default=10000, help="the report uses 10 x its bootstrap resamples (10,000)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    mode = a.mode or a.run.stem.removeprefix("run-")
    task = conversation_turns_task(a.data)
    runs = read_trec(a.run)
    for name in (a.a, a.b):
        if name not in runs:
            raise SystemExit(f"{a.run}: no system {name!r}; it has {sorted(runs)}")
    items = {_trec_token(i): i for i in task.catalog.ids}
    views = {}
    for name in (a.a, a.b):
        ranked = []
        for q in task.queries:
            rows = sorted(runs[name].get(_trec_token(q.id), []))
            ranked.append(([items[d] for _, d, _ in rows], [s for _, _, s in rows]))
        views[name] = mode_view(task, ranked, mode, a.depth)
    kept = views[a.a][0]
    if kept != views[a.b][0]:
        raise SystemExit("the two systems kept different queries; they cannot be paired")
    groups = [task.groups[i] for i in kept]
    gold = views[a.a][2]
    rows = []
    print(f"{a.run} ({mode}, {len(kept)} queries, {len(set(groups))} dialogues): {a.a} vs {a.b}")
    print(f"{'metric':<11}{a.a:>12}{a.b:>12}{'diff':>9}{'95% CI':>20}{'p':>9}")
    for m in a.metrics:
        sa = per_query_scores([r[0] for r in views[a.a][1]], gold, m)
        sb = per_query_scores([r[0] for r in views[a.b][1]], gold, m)
        t = paired_test(sa, sb, seed=a.seed, n_resamples=a.n_resamples, groups=groups)
        rows.append({"metric": m, "a": a.a, "b": a.b, "mean_a": float(sa.mean()), "mean_b": float(sb.mean()), **t.to_json()})
        print(f"{m:<11}{sa.mean():>12.3f}{sb.mean():>12.3f}{t.diff:>+9.3f}{f'[{t.low:+.3f}, {t.high:+.3f}]':>20}{t.p_value:>9.4f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"run": str(a.run), "mode": mode, "n_queries": len(kept), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
