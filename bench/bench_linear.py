"""Float32 matrix products of SmolLM2-135M's MLP shape on one thread: how close a few-token forward is to the CPU's
weight-traffic and compute limits (docs/decoding.md, "Rounds"). Prints JSON.

    python bench/bench_linear.py

60 weight matrices of 1536 x 576 (212 MB, more than the caches, as a forward's 30 layers stream theirs), each
multiplied by a fresh [M, 576] input per round, for M in --rows; best of --reps rounds; GB/s of weights read and GFLOPS.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 20, 48, 160])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    weights = [torch.randn(1536, 576) for _ in range(60)]
    gb = sum(w.numel() * 4 for w in weights) / 1e9
    rows = []
    for m in a.rows:
        best = float("inf")
        for _ in range(a.reps):
            x = torch.randn(m, 576)
            t0 = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - t0)
        rows.append({"rows": m, "ms": round(best * 1000, 1), "weight_GB_per_s": round(gb / best, 1),
                     "GFLOPS": round(2 * m * 576 * 1536 * len(weights) / best / 1e9, 1)})
    print(json.dumps({"bench": "bench/bench_linear.py", "threads": a.threads, "weights_GB": round(gb, 3), "rows": rows,
                      "load": os.getloadavg()[0], "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
