"""ANN vs exact (Flat) search on N x 384 vectors from a pinned, seeded generator. Prints JSON (one object).

    python bench/bench_ann.py --n 1000000 --queries 1000 --seed 0            # the issue's setting (~15-30 min here)
    python bench/bench_ann.py --n 50000 --queries 200 --hnsw 16 --ivf 256     # quick check

Generator (pinned; documented in docs/retrieval.md):
  base   = the real item-text embeddings of all MovieLens + ReDial items (data.encoder, all-MiniLM-L6-v2, 16,666 x
           384, from the embedding cache; embedded on first use);
  point  = normalize(base[b] + s * g), b uniform over base rows, g ~ N(0, C) with C the covariance of the base set
           restricted to its top 128 principal components (noise follows the directions real items vary in);
  s      = calibrated so the median cosine distance from a point to its own base item equals the median cosine
           distance of a real item to its nearest real neighbour (points stay in their base item's neighbourhood,
           at the spread real neighbours have);
  queries = fresh points from the same generator (seed + 1), never in the index.
Goal: recall@10 >= 0.95 against Flat with p50 single-query time <= 1 ms on this 2-core machine. Queries run one at
a time (batch of 1) with faiss using 1 thread (a single query is not parallelised usefully); builds use all cores.
Memory = growth of the process's resident set across the build (index structure + its copy of the vectors).
Each row reports wall-clock percentiles and the median CPU time per query (p50_cpu_ms): on a shared, loaded machine
the wall time includes waiting for a core, the CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import faiss  # noqa: E402

from dlsearch.evaluation.metrics import recall_at_k

PCA_DIMS = 128
CPU_MS: list[float] = []  # median CPU time per single query of the last timing loop (unaffected by other load)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def real_base(cache_dir: str) -> np.ndarray:
    from dlsearch.data.movielens import load_movielens
    from dlsearch.data.redial import load_redial
    from dlsearch.retrieval.embedding import embed_items

    ml, _ = load_movielens()
    rd, _ = load_redial()
    return np.concatenate([embed_items(ml, cache_dir=cache_dir), embed_items(rd, cache_dir=cache_dir)]).astype(np.float32)


def nn_cosine_distance(x: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
    """Cosine distance of `sample` rows of x (normalised) to their nearest other row."""
    idx = rng.choice(len(x), min(sample, len(x)), replace=False)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, labels = index.search(x[idx], 2)
    own = labels[:, 0] == idx
    best = np.where(own, sims[:, 1], sims[:, 0])
    return 1.0 - best


class Generator:
    def __init__(self, base: np.ndarray, seed: int):
        rng = np.random.default_rng(seed)
        self.base = base
        centered = base - base.mean(0)
        _, svals, vt = np.linalg.svd(centered[rng.choice(len(base), min(len(base), 20000), replace=False)], full_matrices=False)
        k = min(PCA_DIMS, len(vt))
        self.components = vt[:k].astype(np.float32)  # [k, d]
        self.stds = (svals[:k] / np.sqrt(min(len(base), 20000) - 1)).astype(np.float32)  # [k]
        self.target = float(np.median(nn_cosine_distance(base, 2000, rng)))
        self.scale = self._calibrate(seed)

    def _raw(self, n: int, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, np.ndarray]:
        b = rng.integers(0, len(self.base), n)
        g = (rng.standard_normal((n, len(self.stds))).astype(np.float32) * self.stds) @ self.components  # [n, d]
        x = self.base[b] + scale * g
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), b

    def _calibrate(self, seed: int) -> float:
        lo, hi = 0.0, 10.0
        for _ in range(40):  # bisection on the median distance to the base item (monotone in scale)
            mid = (lo + hi) / 2
            x, b = self._raw(4000, np.random.default_rng(seed + 100), mid)
            d = float(np.median(1.0 - (x * self.base[b]).sum(1)))
            lo, hi = (mid, hi) if d < self.target else (lo, mid)
        return (lo + hi) / 2

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.base.shape[1]), dtype=np.float32)
        for s in range(0, n, chunk):
            out[s : s + chunk] = self._raw(min(chunk, n - s), rng, self.scale)[0]
        return out


def single_query_ms(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    faiss.omp_set_num_threads(1)
    labels = np.empty((len(q), k), dtype=np.int64)
    times, cpu = [], []
    for i in range(len(q)):
        c0, t0 = time.process_time(), time.perf_counter()
        _, lab = index.search(q[i : i + 1], k)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        labels[i] = lab[0]
    CPU_MS.append(statistics.median(cpu))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return labels, times


def recall(labels: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k (the evaluation metric) of the ANN labels against the exact top k."""
    k = truth.shape[1]
    return float(np.mean([recall_at_k(a, t, k) for a, t in zip(labels.tolist(), truth.tolist())]))


def summarize(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"p50_ms": round(statistics.median(s), 4), "p95_ms": round(s[int(0.95 * len(s)) - 1], 4), "mean_ms": round(sum(s) / len(s), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hnsw", default="32", help="comma list of HNSW M values")
    ap.add_argument("--ef-construction", default="80", help="comma list of efConstruction values")
    ap.add_argument("--ef-search", default="32,64,128,256")
    ap.add_argument("--ivf", default="4096", help="comma list of IVF nlist values ('' to skip)")
    ap.add_argument("--nprobe", default="16,32,64,128")
    ap.add_argument("--pq", default="48", help="PQ code bytes for IVF,PQ with Flat re-ranking ('' to skip)")
    ap.add_argument("--train-size", type=int, default=65536, help="vectors sampled to train IVF/PQ (16 per list at 4096)")
    ap.add_argument("--kmeans-iter", type=int, default=10, help="k-means iterations for the IVF coarse quantizer")
    ap.add_argument("--cache-dir", default=".cache/embeddings")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    base = real_base(args.cache_dir)
    gen = Generator(base, args.seed)
    x = gen.sample(args.n, args.seed)
    q = gen.sample(args.queries, args.seed + 1)
    synth_nn = float(np.median(nn_cosine_distance(x[:200_000], 1000, np.random.default_rng(args.seed))))
    report: dict = {
        "bench": "ann", "n": args.n, "dim": int(x.shape[1]), "queries": args.queries, "k": args.k, "seed": args.seed,
        "generator": {"base_items": len(base), "pca_dims": len(gen.stds), "scale": gen.scale,
                      "real_median_nn_cos_dist": gen.target, "synthetic_median_nn_cos_dist_first200k": synth_nn,
                      "seconds": round(time.perf_counter() - t0, 1)},
        "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "faiss": faiss.__version__,
                    "gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0, "shared_by": "5 helpers"},
        "runs": [],
    }
    print(json.dumps({"progress": "data ready", **report["generator"]}), file=sys.stderr, flush=True)

    r0 = rss_mb()
    flat = faiss.IndexFlatIP(x.shape[1])
    t1 = time.perf_counter()
    flat.add(x)
    flat_build = time.perf_counter() - t1
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, truth = flat.search(q, args.k)
    _, flat_times = single_query_ms(flat, q[: min(30, len(q))], args.k)
    report["runs"].append({"index": "Flat", "build_s": round(flat_build, 2), "memory_mb": round(rss_mb() - r0, 1),
                           "recall@10": 1.0, **summarize(flat_times), "note": "exact; single-query times on 30 queries"})
    del flat
    print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)

    def run_index(name: str, index: faiss.Index, param: str, values: list[int]) -> None:
        r = rss_mb()
        t = time.perf_counter()
        if not index.is_trained:
            faiss.extract_index_ivf(index).cp.niter = args.kmeans_iter
            index.train(x[np.random.default_rng(args.seed).choice(len(x), min(len(x), args.train_size), replace=False)])
        index.add(x)
        build = time.perf_counter() - t
        mem = rss_mb() - r
        ps = faiss.ParameterSpace()
        for v in values:
            ps.set_index_parameter(index, param, v)
            labels, times = single_query_ms(index, q, args.k)
            row = {"index": name, param: v, "build_s": round(build, 1), "memory_mb": round(mem, 1),
                   "recall@10": round(recall(labels, truth), 4), **summarize(times), "p50_cpu_ms": round(CPU_MS[-1], 4)}
            row["meets_goal"] = row["recall@10"] >= 0.95 and row["p50_ms"] <= 1.0
            report["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    # IVF first: on a loaded machine it is the cheaper build, so its rows exist even if HNSW is cut short
    nprobe = [int(v) for v in args.nprobe.split(",") if v]
    for nlist in [int(v) for v in args.ivf.split(",") if v]:
        run_index(f"IVF{nlist},Flat", faiss.index_factory(x.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT), "nprobe", nprobe)
        for pq in [int(v) for v in args.pq.split(",") if v]:
            idx = faiss.index_factory(x.shape[1], f"IVF{nlist},PQ{pq},RFlat", faiss.METRIC_INNER_PRODUCT)
            faiss.ParameterSpace().set_index_parameter(idx, "k_factor_rf", 4)  # re-rank 4k PQ candidates exactly
            run_index(f"IVF{nlist},PQ{pq},RFlat(k_factor=4)", idx, "nprobe", nprobe)
    ef_search = [int(v) for v in args.ef_search.split(",") if v]
    for m in [int(v) for v in args.hnsw.split(",") if v]:
        for efc in [int(v) for v in args.ef_construction.split(",") if v]:
            index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = efc
            run_index(f"HNSW{m},efC{efc}", index, "efSearch", ef_search)
            del index
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    met = [r for r in report["runs"] if r.get("meets_goal")]
    report["best_meeting_goal"] = min(met, key=lambda r: r["p50_ms"]) if met else None
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
