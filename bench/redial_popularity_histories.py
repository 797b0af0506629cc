"""Does the extra data alone explain a gain? Popularity baselines that also count MovieLens ratings, on ReDial turns.

    python bench/redial_popularity_histories.py --data runs/redial_pre_hist/data \
        --run direct=runs/redial_pre_hist/eval/testall-step1068-lp0.0-b20/run-excluded.trec \
        --out bench/results/redial_pretrained_history/popularity_histories

A ReDial model trained with `data.histories: movielens` has seen MovieLens's ratings (moved onto the linked ReDial
movies); the package's popularity baseline counts only ReDial's training targets. This scores, on the prepared dir's
test turns through the production evaluation (already-mentioned movies excluded, paired tests against the best
baseline), three popularity rankings: ReDial training targets (the package's baseline), MovieLens training events
on linked movies only, and both counts added. `--run NAME=FILE` adds a system's saved ranking (the run-excluded.trec
that `run_evaluation` writes), so a direct-search model is compared with each popularity on the same turns.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from dlsearch.data.catalog import read_jsonl
from dlsearch.evaluation.baselines import PopularitySearch
from dlsearch.evaluation.protocol import TrecRun, conversation_turns_task, evaluate_systems, print_report, write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a prepared dir with histories (prepare --histories movielens)")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=FILE[:SYSTEM]",
                    help="a saved ranking to compare (SYSTEM: the name inside the trec file; default NAME)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-resamples", type=int, default=1000)
    a = ap.parse_args()

    task = conversation_turns_task(a.data)
    hist = a.data / "histories" / "train.jsonl"
    if not hist.is_file():
        raise SystemExit(f"{hist}: missing; prepare the dir with --histories movielens")
    ml = Counter(i for _, r in read_jsonl(hist) for i, _ in r["events"])
    redial = Counter({i: c for i, c in task.train_counts.items() if i in task.catalog})
    systems = {"popularity": PopularitySearch(task.catalog, redial),
               "popularity_movielens": PopularitySearch(task.catalog, ml),
               "popularity_redial+movielens": PopularitySearch(task.catalog, redial + ml)}
    for spec in a.run:
        name, _, rest = spec.partition("=")
        path, _, system = rest.partition(":")
        systems[name] = TrecRun(Path(path), task.catalog, system or name)
    summary = {"data": str(a.data), "runs": a.run, "n_queries": len(task.queries),
               "movielens_train_events": sum(ml.values()), "redial_train_targets": sum(redial.values()), "vs": {}}
    for ref in [n for n in systems if n.startswith("popularity")]:  # each popularity as THE baseline of a paired run
        report = evaluate_systems(task, systems, baselines=(ref,), n_resamples=a.n_resamples,
                                  config={k: summary[k] for k in ("data", "runs")})
        write_report(report, task, a.out / f"vs-{ref.replace('+', '_')}")
        mode = report["modes"]["excluded"]
        summary["vs"][ref] = {name: {"recall@10": e["metrics"]["recall@10"],
                                     "vs_baseline": e.get("vs_best_baseline", {}).get("recall@10")}
                              for name, e in mode["systems"].items()}
        if ref == "popularity":
            print_report(report)
    print(f"{'system':32s} {'recall@10 [95% CI]':26s} " + " ".join(f"{'vs ' + r:>34s}" for r in summary["vs"]))
    for name in systems:
        m = summary["vs"]["popularity"][name]["recall@10"]
        cells = []
        for ref, d in summary["vs"].items():
            t = d[name]["vs_baseline"]
            cells.append(f"{'—':>34s}" if not t else f"{t['diff']:+.3f} (p = {t['p_value']:.4f})".rjust(34))
        print(f"{name:32s} {m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]      " + " ".join(cells))
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
