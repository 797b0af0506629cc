"""The trie index at catalog scale: build, save, load, one constrained step, add / retire, with peak RSS per stage.

    flock /tmp/bigmem.lock nice -n 5 python bench/bench_trie_scale.py --n 100000000 --out bench/results/trie_scale_100m.json

Catalog: n random 4-token codes over a 32k vocabulary (distinct by construction: the first two tokens spell the row
through two random permutations, the last two are uniform) with 10-character string ids ("i000000042"), both numpy
arrays (no Python object per item). Stage "build" (one subprocess: generate, build, save) and stage "use" (another:
load verified and unverified, one constrained decoding step at 160 rows, add 1,000 items, retire 20, deny-list
processor, save the delta) each report their own peak RSS. Results are written after each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_trie import BATCH, BEAMS, EOS, LENGTH, VOCAB, string_ids

LOW = 3  # tokens 0..2 are special (EOS = 2)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _status_gb(field: str) -> float:
    """A memory field of /proc/self/status (kB) in GiB; nan where the kernel has none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def rss_gb() -> float:
    return _status_gb("VmRSS")


def reset_peak_rss() -> None:
    """Start a new peak (VmHWM) for this process: Linux resets it on writing 5 to /proc/self/clear_refs."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_gb() -> float:
    """Peak RSS since the last reset_peak_rss (VmHWM)."""
    return _status_gb("VmHWM")


def codes(n: int, seed: int = 0) -> np.ndarray:
    """int32 [n, 4], distinct rows: (P0[i % B], P1[i // B], random, random) for a random row order i.

    Generated in chunks from an int32 permutation (the data's own peak stays near its 16 bytes per item)."""
    b = VOCAB - LOW
    assert n <= b * b, "first two tokens must spell the row"
    rng = np.random.default_rng(seed)
    p0, p1 = rng.permutation(b).astype(np.int32) + LOW, rng.permutation(b).astype(np.int32) + LOW
    i = np.arange(n, dtype=np.int32)
    rng.shuffle(i)
    out = np.empty((n, LENGTH), dtype=np.int32)
    step = 1 << 22
    for lo in range(0, n, step):
        c = i[lo:lo + step]
        out[lo:lo + step, 0] = p0[c % b]
        out[lo:lo + step, 1] = p1[c // b]
        out[lo:lo + step, 2:] = rng.integers(LOW, VOCAB, size=(c.shape[0], 2), dtype=np.int32)
    return out


def stage_build(n: int, d: Path) -> dict:
    from dlsearch.decoding.index import index_from_sequences

    t0 = time.perf_counter()
    toks, names = codes(n), string_ids(n)
    lengths = np.full(n, LENGTH, dtype=np.uint8)
    out = {"data_s": time.perf_counter() - t0, "data_rss_gb": rss_gb(), "data_peak_rss_gb": peak_rss_gb()}
    reset_peak_rss()  # the build's own peak (inputs held by the caller included), not the data generator's
    t0 = time.perf_counter()
    index = index_from_sequences(names, (toks, lengths), vocab_size=VOCAB, end_token_id=EOS)
    out["build_s"] = time.perf_counter() - t0
    out["build_peak_rss_gb"] = hwm_gb()
    out["build_peak_bytes_per_item"] = round(out["build_peak_rss_gb"] * 2**30 / n, 1)
    del toks, names, lengths
    reset_peak_rss()
    t0 = time.perf_counter()
    index.save(d)
    out["save_s"] = time.perf_counter() - t0
    out["save_peak_rss_gb"] = hwm_gb()
    out["files_bytes"] = {p.name: p.stat().st_size for p in sorted(d.iterdir())}
    out["index_bytes"] = index.nbytes()
    out["peak_rss_gb"] = max(out["data_peak_rss_gb"], out["build_peak_rss_gb"], out["save_peak_rss_gb"])
    return out


def stage_use(n: int, d: Path) -> dict:
    import torch

    from dlsearch.decoding.constraint import TrieConstraint
    from dlsearch.decoding.index import TrieIndex

    torch.set_num_threads(1)
    out: dict = {}
    for verify in (False, True):  # unverified first: the verified load then reads from the page cache either way
        t0 = time.perf_counter()
        index = TrieIndex.load(d, verify=verify)
        out[f"load_s_verify_{str(verify).lower()}"] = time.perf_counter() - t0
        out[f"rss_after_load_gb_verify_{str(verify).lower()}"] = rss_gb()
    rng = np.random.default_rng(1)
    rows = codes(n)[rng.integers(0, n, size=BATCH * BEAMS)] if n <= 20_000_000 else None
    if rows is None:  # at 100M, read the codes of random items back from the index instead of regenerating 1.6 GB
        picks = rng.integers(0, n, size=BATCH * BEAMS)
        names = [f"i{p:09d}" for p in picks]
        rows = np.array([index.code(x) for x in names], dtype=np.int64)
    prompt = torch.from_numpy(rng.integers(LOW, VOCAB, size=(BATCH * BEAMS, 8)))
    proc = TrieConstraint(index, eos_token_id=EOS)
    steps = []
    for depth in range(LENGTH + 1):
        ids = torch.cat([prompt, torch.from_numpy(np.asarray(rows[:, :depth], dtype=np.int64))], dim=1)
        scores = torch.randn(BATCH * BEAMS, VOCAB)
        t0 = time.perf_counter()
        masked = proc(ids, scores)
        steps.append((time.perf_counter() - t0) * 1000)
        if depth < LENGTH:
            ok = torch.isfinite(masked[torch.arange(rows.shape[0]), torch.from_numpy(np.asarray(rows[:, depth],
                                                                                                  dtype=np.int64))])
            assert bool(ok.all()), f"a catalog item's next token was masked at depth {depth}"
    out["constrained_step_ms_per_depth"] = steps
    add = codes(1000, seed=99) % (VOCAB - LOW) + LOW
    add[:, 1] = VOCAB - 1  # a fresh second token region keeps them distinct from most catalog codes
    t0 = time.perf_counter()
    try:
        index.add_items([f"new{i}" for i in range(1000)], (add, np.full(1000, LENGTH)))
        out["add_1000_s"] = time.perf_counter() - t0
    except ValueError as e:  # a random clash with a catalog code: report rather than hide
        out["add_1000_error"] = str(e)
    t0 = time.perf_counter()
    index.retire_items([f"i{p:09d}" for p in range(10)] + [f"new{i}" for i in range(10)])
    out["retire_20_s"] = time.perf_counter() - t0
    deny = [[f"i{p:09d}" for p in rng.integers(0, n, size=50)] for _ in range(BATCH)]
    t0 = time.perf_counter()
    TrieConstraint(index, eos_token_id=EOS, rows_per_query=BEAMS, deny=deny)
    out["deny_processor_ms"] = (time.perf_counter() - t0) * 1000
    with tempfile.TemporaryDirectory(dir=d.parent) as d2:
        t0 = time.perf_counter()
        index.save(Path(d2) / "idx", compact=False)
        out["save_after_add_s"] = time.perf_counter() - t0
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--out", default="")
    ap.add_argument("--dir", default="", help="index directory (default: a temporary one, removed after)")
    ap.add_argument("--stage", choices=["build", "use"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        fn = stage_build if args.stage == "build" else stage_use
        print(json.dumps(fn(args.n, Path(args.dir))))
        return
    doc = {"command": " ".join(["python", "bench/bench_trie_scale.py"] + sys.argv[1:]), "n_items": args.n,
           "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}"
                      " GiB (shared with other sessions)",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg(), "stages": {}}
    with tempfile.TemporaryDirectory(dir=args.dir or None) as tmp:
        d = Path(tmp) / "idx"
        for stage in ("build", "use"):
            t0 = time.time()
            p = subprocess.run([sys.executable, __file__, "--stage", stage, "--n", str(args.n), "--dir", str(d)],
                               capture_output=True, text=True)
            res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-3000:]}
            res["wall_s"] = round(time.time() - t0, 1)
            doc["stages"][stage] = res
            doc["loadavg_end"] = os.getloadavg()
            if args.out:
                Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps({stage: res}), file=sys.stderr, flush=True)
            if p.returncode != 0:
                break
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
