"""Train the mention linker's context filter (retrieval/mention_filter.py) on the dev half of ReDial only.

    python bench/train_mention_filter.py [--seeds 0 1 2] [--out retrieval/mention_filter.json]

Reads top to bottom: load ReDial and the rules-only linker → collect every link the rules accept on the
even-numbered dialogues (dev), labelled by the mention protocol (evaluation/mentions.py `linking_report(links=)`):
titles typed by the protocol (one render per seed) linked right are positives, wrong links and links in messages
with the mentions removed are negatives (links there to a film of the conversation or a checked typed title are
positives: typed by people) → pick the threshold on out-of-fold scores (2 folds of dev dialogues, one fit on each,
scored on the other) as the highest one that costs at most --max-recall-loss of dev recall and keeps precision >=
--min-precision →
refit on all of dev → write the weights, scaling, threshold and the dev curve as JSON (never a pickle), the curve
also as CSV and PNG under bench/results/. The held-out (odd) dialogues are never read here; bench/bench_mentions.py
measures them with the frozen filter.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dlsearch.data.redial import load_redial
from dlsearch.evaluation.mentions import linking_report, load_typed_titles
from dlsearch.retrieval.mention_filter import FEATURES, FILTER_JSON
from dlsearch.retrieval.mentions import MentionLinker

C = 1.0  # inverse L2 strength; features are standardized, so one value serves all


def collect(linker, dialogues, typed, seeds, cased_seeds):
    """Rows of the rules' links on `dialogues`, and per seed the protocol's report (tp, fn, messages). Renders of
    `cased_seeds` keep the catalog's capitals on titles without the year ("I loved Toy Story"): the protocol types
    those in lower case only, and a filter that never saw them as positives would learn "capitalised = a name"."""
    rows, reports = [], {}
    for s in list(seeds) + list(cased_seeds):
        links: list = []
        reports[s] = linking_report(linker, dialogues, seed=s, typed=typed, links=links, examples=0,
                                    cased_share=1.0 if s in cased_seeds else 0.0)
        # the bare (mentions removed) messages do not depend on the seed: keep them once
        rows += [{**r, "seed": s} for r in links if r["stage"] == "rules" and (r["part"] == "typed" or s == seeds[0])]
    return rows, reports


def fit(X, y):
    scaler = StandardScaler().fit(X)
    scaler.scale_[scaler.scale_ == 0] = 1.0
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=0).fit(scaler.transform(X), y)
    return scaler, model


def curve(scores, rows, reports, seeds, cased_seeds, thresholds):
    """Per threshold: dev recall and precision (mean over the protocol's seeds; recall also over the cased renders)
    and false links per 1,000 bare messages when links scoring below it are dropped."""
    out = []
    n_bare = reports[seeds[0]]["messages_without_mentions_checked"]
    for t in thresholds:
        keep = scores >= t
        rec, prec = [], []
        for s in list(seeds) + list(cased_seeds):
            rep = reports[s]
            tp0, fp0, fn0 = rep["links_right"], rep["links_wrong"], rep["mentions_missed"]
            sel = [k for k, r in enumerate(rows) if r["part"] == "typed" and r["seed"] == s]
            lost_tp = sum(1 for k in sel if rows[k]["label"] == 1 and not keep[k])
            lost_fp = sum(1 for k in sel if rows[k]["label"] == 0 and not keep[k])
            rec.append((tp0 - lost_tp) / max(tp0 + fn0, 1))
            prec.append((tp0 - lost_tp) / max(tp0 - lost_tp + fp0 - lost_fp, 1))
        false = sum(1 for k, r in enumerate(rows) if r["part"] == "bare" and r["label"] == 0 and keep[k])
        n = len(seeds)
        out.append({"threshold": round(float(t), 4), "recall": round(float(np.mean(rec[:n])), 4),
                    "precision": round(float(np.mean(prec[:n])), 4),
                    "recall_cased": round(float(np.mean(rec[n:])), 4) if rec[n:] else None, "false_links": false,
                    "false_links_per_1000": round(1000 * false / n_bare, 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="protocol renders of dev (positives)")
    ap.add_argument("--cased-seeds", type=int, nargs="*", default=[3, 4],
                    help="renders with plain titles in the catalog's capitals (positives)")
    ap.add_argument("--max-recall-loss", type=float, default=0.002,
                    help="dev recall the filter may cost (held-out recall of the rules alone is 0.903: little room)")
    ap.add_argument("--min-precision", type=float, default=0.97, help="dev precision the threshold must keep")
    ap.add_argument("--out", default=str(FILTER_JSON))
    ap.add_argument("--curve", default="bench/results/mention_filter_curve")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load_start = os.getloadavg()

    catalog, dialogues = load_redial()
    dev = dialogues[0::2]  # held-out = dialogues[1::2], never read here
    typed = load_typed_titles(dev, catalog)
    linker = MentionLinker(catalog)  # the rules alone: the filter sees what they accept
    rows, reports = collect(linker, dev, typed, args.seeds, args.cased_seeds)
    X = np.array([[r["features"][f] for f in FEATURES] for r in rows], dtype=np.float64)
    y = np.array([r["label"] for r in rows])
    fold = np.array([hash_fold(r["conversation"]) for r in rows])
    print(f"{len(rows)} links, {int(y.sum())} positive; bare negatives "
          f"{sum(1 for r in rows if r['part'] == 'bare' and r['label'] == 0)}", file=sys.stderr)

    # out-of-fold scores: each dev fold scored by a model fitted on the other
    oof = np.zeros(len(rows))
    for k in (0, 1):
        scaler, model = fit(X[fold != k], y[fold != k])
        oof[fold == k] = model.predict_proba(scaler.transform(X[fold == k]))[:, 1]
    # fine steps at the bottom: the recall budget is spent within the first few hundredths
    thresholds = np.round(np.concatenate([np.arange(0.0, 0.05, 0.001), np.arange(0.05, 1.0, 0.01)]), 3)
    dev_curve = curve(oof, rows, reports, args.seeds, args.cased_seeds, thresholds)
    base = dev_curve[0]
    ok = [c for c in dev_curve if c["recall"] >= base["recall"] - args.max_recall_loss
          and (c["recall_cased"] is None or c["recall_cased"] >= base["recall_cased"] - args.max_recall_loss)
          and c["precision"] >= args.min_precision]
    if not ok:
        raise SystemExit(f"error: no threshold keeps dev recall within {args.max_recall_loss} and precision >= "
                         f"{args.min_precision}; the rules alone give {dev_curve[0]}")
    chosen = max(ok, key=lambda c: c["threshold"])

    scaler, model = fit(X, y)
    rec = {
        "features": list(FEATURES),
        "mean": [round(float(v), 6) for v in scaler.mean_],
        "scale": [round(float(v), 6) for v in scaler.scale_],
        "weights": [round(float(v), 6) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
        "threshold": chosen["threshold"],
        "command": " ".join(["python", "bench/train_mention_filter.py"] + sys.argv[1:]),
        "trained_on": "ReDial even-numbered dialogues (dev), rules' links; held-out (odd) never read",
        "model": f"sklearn LogisticRegression(C={C}, class_weight='balanced'), standardized features",
        "links": len(rows), "positives": int(y.sum()), "seeds": args.seeds, "cased_seeds": args.cased_seeds,
        "selection": {"rule": f"highest threshold with out-of-fold dev recall >= the rules' - {args.max_recall_loss} and "
                              f"precision "
                              f">= {args.min_precision} (mean over seeds), 2 folds of dev dialogues",
                      "rules_alone": dev_curve[0], "chosen": chosen},
        "seconds": round(time.perf_counter() - t0, 1),
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    write_curve(dev_curve, chosen, Path(args.curve))
    print(json.dumps({k: v for k, v in rec.items() if k not in ("mean", "scale")}, indent=1))


def hash_fold(conversation_id: str) -> int:
    """A fold from the dialogue id's digits: the same in every process (no string hash seed)."""
    return sum(map(ord, conversation_id)) % 2


def write_curve(dev_curve, chosen, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"chosen": chosen, "curve": dev_curve}, indent=1) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dev_curve[0]))
        w.writeheader()
        w.writerows(dev_curve)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["recall"] for c in dev_curve], [c["false_links_per_1000"] for c in dev_curve], ".-", ms=3)
    ax.plot([chosen["recall"]], [chosen["false_links_per_1000"]], "o", color="red",
            label=f"chosen threshold {chosen['threshold']}")
    ax.axhline(1.0, color="gray", ls="--", lw=0.8, label="target: 1 false link / 1,000")
    ax.axvline(0.90, color="gray", ls=":", lw=0.8, label="target: recall 0.90")
    ax.set_xlabel("dev recall (out-of-fold, mean over seeds)")
    ax.set_ylabel("false links / 1,000 mention-free messages")
    ax.set_title("Mention filter on ReDial dev: thresholds 0.00-0.99")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
