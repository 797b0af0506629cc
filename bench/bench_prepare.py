"""Wall time of `dlsearch data prepare` per dataset (fresh output folder; embedding cache as given), as JSON.

    python bench/bench_prepare.py --ids semantic --cache-dir .cache/embeddings > bench/results/prepare.json

Reports the machine load (os.getloadavg) at start and end: on a shared machine the wall time depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


from dlsearch.data.prepare import prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="redial,movielens")
    ap.add_argument("--ids", default="semantic")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    results = []
    for ds in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as out:
            load0 = os.getloadavg()
            t0, c0 = time.perf_counter(), time.process_time()
            man = prepare(ds, args.ids, out, cache_dir=args.cache_dir, log=lambda s: None)
            t1, c1 = time.perf_counter(), time.process_time()
            again = time.perf_counter()
            prepare(ds, args.ids, out, cache_dir=args.cache_dir, log=lambda s: None)
            rerun = time.perf_counter() - again
        results.append({"dataset": ds, "ids": args.ids, "wall_s": round(t1 - t0, 1), "cpu_s": round(c1 - c0, 1),
                        "rerun_wall_s": round(rerun, 1), "idmap_s": man["steps"]["idmap"].get("seconds"),
                        "load_start": [round(x, 2) for x in load0], "load_end": [round(x, 2) for x in os.getloadavg()],
                        "cpus": os.cpu_count(), "examples": man["stats"]["examples"]})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
