"""BM25 index build time over every MovieLens + ReDial item (goal: < 2 s), and query latency. Prints JSON.

    python bench/bench_bm25.py [--repeats 5] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


from dlsearch.data.catalog import Catalog, Item  # noqa: E402
from dlsearch.data.movielens import load_movielens  # noqa: E402
from dlsearch.data.redial import load_redial  # noqa: E402
from dlsearch.retrieval.bm25 import build_bm25  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    ml, _ = load_movielens()
    rd, dialogues = load_redial()
    # one catalog of both (ids prefixed: the two datasets number movies independently)
    items = [Item("ml:" + it.id, it.title, it.text, it.concepts) for it in ml] + [Item("rd:" + it.id, it.title, it.text, it.concepts) for it in rd]
    catalog = Catalog(items)
    builds, cpu = [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        index = build_bm25(catalog)
        cpu.append(time.process_time() - c0)
        builds.append(index.build_seconds)
    queries = [" ".join(m.content for m in d.messages[:4]) for d in dialogues[: args.queries]]
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.search([q], 10)
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    index.search(queries, 10)
    batch = time.perf_counter() - t0
    print(json.dumps({
        "bench": "bm25", "n_items": len(catalog), "build_seconds": {"median": statistics.median(builds), "max": max(builds), "all": builds},
        "build_cpu_seconds": {"median": statistics.median(cpu), "max": max(cpu)},
        "goal_build_lt_2s": max(builds) < 2.0,
        "query_ms": {"p50": statistics.median(lat), "p95": sorted(lat)[int(0.95 * len(lat)) - 1]},
        "batch_queries_per_s": len(queries) / batch, "load_avg": os.getloadavg(), "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
