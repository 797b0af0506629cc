"""How far a paired comparison is from significance: the smallest difference the same test set could show at p < 0.05,
and how many test turns the observed difference would need — from the rows bench/paired_from_trec.py (or a report's
vs_best_baseline) wrote.

    python bench/power_from_paired.py bench/results/redial_pretrained_e3/paired/step1200-direct-vs-popularity.json \
        bench/results/redial_pretrained_e3/paired/step1200-router-vs-dual.json --out bench/results/redial_pretrained_e3/power.json

Normal approximation: the standard error is the 95 % bootstrap interval's half-width / 1.96 and shrinks as 1/sqrt(n)
with the same spread per dialogue. "min diff" is 1.96 SE (a difference that large has p ~ 0.05: half the chance of
p < 0.05 if it is the true one) and 2.80 SE (80 % power); "turns needed" is the number of turns at which the observed
difference reaches those. The randomization test's own p-value stays the verdict; this only says how far it is. The
approximation leans optimistic (the sign-flip null is a little wider than the bootstrap interval: normal p 0.080 /
0.104 / 0.149 where that test gave 0.080 / 0.113 / 0.162 on the ReDial runs), so the turns needed are a lower bound.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

Z_05, Z_POWER80 = 1.959964, 1.959964 + 0.841621  # two-sided 5 %; plus 80 % power


def power_row(diff: float, low: float, high: float, n: int) -> dict[str, float]:
    """SE from the 95 % interval, the z and normal p of the observed diff, the minimal detectable diffs at n and the
    turns the observed diff would need for p ~ 0.05 and for 80 % power."""
    se = (high - low) / (2 * Z_05)
    z = diff / se if se > 0 else math.inf
    need = (lambda zz: math.inf if diff == 0 else n * (zz * se / diff) ** 2)
    return {"se": se, "z": z, "normal_p": math.erfc(abs(z) / math.sqrt(2)), "min_diff_p05": Z_05 * se,
            "min_diff_power80": Z_POWER80 * se, "turns_for_p05": need(Z_05), "turns_for_power80": need(Z_POWER80)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paired", nargs="+", type=Path, help="JSON files written by bench/paired_from_trec.py --out")
    ap.add_argument("--metric", default="recall@10")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    for path in a.paired:
        js = json.loads(path.read_text(encoding="utf-8"))
        hit = [r for r in js["rows"] if r["metric"] == a.metric]
        if not hit:
            raise SystemExit(f"{path}: no row for metric {a.metric!r} (has {[r['metric'] for r in js['rows']]})")
        r, n = hit[0], int(js["n_queries"])
        rows.append({"file": str(path), "a": r["a"], "b": r["b"], "metric": a.metric, "n": n, "diff": r["diff"],
                     "low": r["low"], "high": r["high"], "p_value": r["p_value"], **power_row(r["diff"], r["low"], r["high"], n)})
    print(f"{'A vs B':<26}{'n':>5}{'diff':>8}{'p':>8}{'normal p':>10}{'SE':>8}{'min diff p05':>14}{'80% power':>11}"
          f"{'turns p05':>11}{'turns 80%':>11}")
    for r in rows:
        print(f"{r['a'] + ' vs ' + r['b']:<26}{r['n']:>5}{r['diff']:>+8.3f}{r['p_value']:>8.3f}{r['normal_p']:>10.3f}"
              f"{r['se']:>8.4f}{r['min_diff_p05']:>14.3f}{r['min_diff_power80']:>11.3f}{r['turns_for_p05']:>11.0f}"
              f"{r['turns_for_power80']:>11.0f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
