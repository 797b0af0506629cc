"""Mention linking on ReDial: precision / recall of titles typed as plain text, false links on mention-free text.

    python bench/bench_mentions.py [--seed 0] [--out bench/results/mentions.json]

Protocol (evaluation/mentions.py): every `@id` of a ReDial message becomes the item's title, half of them without
the year and in lower case, one in ten with a typo; the linker (retrieval/mentions.py) reads the message back. False
links are counted on every message with its `@id` mentions removed; links to a film of the conversation's `@id`s
and to the hand-checked plain-text titles of evaluation/redial_typed_titles.jsonl are counted apart
(`false_links_strict` counts the latter as false). The linker's rules were tuned on the even-numbered dialogues
("dev"); "held_out" (odd-numbered) was measured once after the rules were frozen. The same splits are measured
again with the learned context filter (retrieval/mention_filter.json, trained on dev only by
bench/train_mention_filter.py) under "filtered"; its held-out figures were measured once with the filter frozen.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from dlsearch.data.redial import load_redial
from dlsearch.evaluation.mentions import linking_report, load_typed_titles
from dlsearch.retrieval.mention_filter import FILTER_JSON, load_filter
from dlsearch.retrieval.mentions import MentionLinker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/mentions.json")
    args = ap.parse_args()
    load_start = os.getloadavg()
    catalog, dialogues = load_redial()
    t0 = time.perf_counter()
    linker = MentionLinker(catalog)
    build = time.perf_counter() - t0
    typed = load_typed_titles(dialogues, catalog)
    out: dict = {"command": " ".join(["python", "bench/bench_mentions.py"] + sys.argv[1:]),
                 "catalog_items": len(catalog), "dialogues": len(dialogues), "linker_build_seconds": round(build, 2),
                 "checked_typed_titles": len(typed)}
    filtered = MentionLinker(catalog, filter=load_filter())
    out["filtered"] = {"filter": str(FILTER_JSON.relative_to(Path(__file__).resolve().parents[1])),
                       "threshold": filtered.filter.threshold, "trained_with": filtered.filter.meta.get("command")}
    for name, part in (("dev", dialogues[0::2]), ("held_out", dialogues[1::2]), ("all", dialogues)):
        for where, lk in ((out, linker), (out["filtered"], filtered)):
            t0 = time.perf_counter()
            rep = linking_report(lk, part, seed=args.seed, examples=15 if name == "held_out" else 0, typed=typed)
            rep["seconds"] = round(time.perf_counter() - t0, 2)
            if name != "held_out":
                rep.pop("examples_wrong"), rep.pop("examples_false_links")
            where[name] = rep
    msgs = [m.content for d in dialogues[:200] for m in d.messages]
    for where, lk in ((out, linker), (out["filtered"], filtered)):
        lat = []
        for text in msgs:
            t0 = time.perf_counter()
            lk.find(text)
            lat.append((time.perf_counter() - t0) * 1e3)
        where["find_ms_per_message"] = {"median": round(statistics.median(lat), 3),
                                        "p99": round(sorted(lat)[int(0.99 * len(lat))], 3), "n": len(lat)}
    out["loadavg_start"], out["loadavg_end"] = [round(x, 2) for x in load_start], [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
