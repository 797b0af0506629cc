"""Mask cost per decoding step, index memory and build cost: our flat trie vs GENRE's nested-dict trie (through
transformers' PrefixConstrainedLogitsProcessor) vs a marisa BytesTrie (prefix -> next tokens), same run, same data.

    nice -n 5 python bench/bench_trie.py --sizes 1000,100000,1000000 --big 10000000 --out bench/results/trie.json

Setup (issue 4): random 4-token ids over a 32k vocabulary, batch 8 x 20 beams = 160 rows, EOS ends every id, so one
id's decode is 5 steps (depth 0..4, the last allows only EOS). Each step gets a FRESH score tensor, as `generate`
gives each processor (reusing one cache-hot tensor flattered us 12x, issue 14). Reported: the median over repeats of
one id's decode (sum of its 5 steps) and the spread, with 1 and 2 torch threads, all peers in the same run. Every
(implementation, size) runs in a fresh subprocess so build time and peak RSS are its own. Ours also reports the
index with real string ids: build, add 1,000 items, deny-list processor build, save, load (verified / not).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

VOCAB, LENGTH, EOS, BATCH, BEAMS, PROMPT = 32000, 4, 2, 8, 20, 8


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_ids(n: int, seed: int = 0) -> np.ndarray:
    """n distinct random 4-token ids (tokens 3..VOCAB-1, so none is EOS)."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(3, VOCAB, size=(n, LENGTH), dtype=np.int64)
    key = ((toks[:, 0] * VOCAB + toks[:, 1]) * VOCAB + toks[:, 2]) * VOCAB + toks[:, 3]
    _, first = np.unique(key, return_index=True)
    return toks[np.sort(first)]


def decode_inputs(ids: np.ndarray, seed: int = 1) -> list:
    """input_ids for steps 0..4 of decoding one id per row (rows follow random catalog items)."""
    import torch

    rng = np.random.default_rng(seed)
    rows = ids[rng.integers(0, ids.shape[0], size=BATCH * BEAMS)]
    prompt = rng.integers(3, VOCAB, size=(BATCH * BEAMS, PROMPT))
    return [torch.from_numpy(np.concatenate([prompt, rows[:, :d]], axis=1)) for d in range(LENGTH + 1)]


def time_steps(make_processor, steps, repeats: int) -> dict:
    """Per repeat, one fresh decode (depth 0 -> 4) with a fresh score tensor per step (allocated and filled outside
    the timed call, like the logits `generate` hands over). Returns the median ms per depth and the median, min and
    max of the per-decode sums."""
    import torch

    g = torch.Generator().manual_seed(0)
    per = [[] for _ in steps]
    for _ in range(repeats):
        proc = make_processor()
        for d, ids in enumerate(steps):
            scores = torch.randn(BATCH * BEAMS, VOCAB, generator=g)  # fresh [rows, vocab] per step
            t0 = time.perf_counter()
            out = proc(ids, scores)
            per[d].append((time.perf_counter() - t0) * 1000)
            del out, scores
    sums = np.sum(np.array(per), axis=0)
    return {"mask_ms_per_depth": [float(np.median(p)) for p in per], "mask_ms_sum": float(np.median(sums)),
            "mask_ms_sum_min": float(sums.min()), "mask_ms_sum_max": float(sums.max()), "repeats": repeats}


def check_allowed(proc_out, ids_next) -> bool:
    """The next token of every row must be allowed (finite) by the mask: a correctness check of each peer."""
    import torch

    rows = torch.arange(ids_next.shape[0])
    return bool(torch.isfinite(proc_out[rows, ids_next[:, -1]]).all())


def worker(impl: str, n: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    ids = random_ids(n)
    steps = decode_inputs(ids)
    base_rss = peak_rss_mb()
    out: dict = {"impl": impl, "n_ids": int(ids.shape[0])}
    if impl == "ours":
        import tempfile

        from dlsearch.decoding.constraint import TrieConstraint
        from dlsearch.decoding.index import TrieIndex, index_from_sequences

        names = string_ids(ids.shape[0])
        t0 = time.perf_counter()
        index = index_from_sequences(names, (ids, np.full(ids.shape[0], LENGTH)), vocab_size=VOCAB, end_token_id=EOS)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_rss_mb"] = peak_rss_mb() - base_rss
        trie = index.base.trie
        out["index_bytes"] = trie.nbytes()
        out["index_bytes_with_ids"] = index.nbytes()
        out["arrays"] = {k: int(v.nbytes) for k, v in trie.arrays().items()}
        make = lambda: TrieConstraint(index, eos_token_id=EOS, rows_per_query=BEAMS)  # noqa: E731
        rng = np.random.default_rng(7)
        deny = [[str(x) for x in names[rng.integers(0, ids.shape[0], size=50)].astype(str)] for _ in range(BATCH)]
        t0 = time.perf_counter()
        TrieConstraint(index, eos_token_id=EOS, rows_per_query=BEAMS, deny=deny)
        out["deny_processor_ms"] = (time.perf_counter() - t0) * 1000  # 8 queries x 50 denied ids
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
            t0 = time.perf_counter()
            index.save(Path(d) / "idx")
            out["save_s"] = time.perf_counter() - t0
            for verify in (True, False):
                t0 = time.perf_counter()
                loaded = TrieIndex.load(Path(d) / "idx", verify=verify)
                out[f"load_s_verify_{verify}".lower()] = time.perf_counter() - t0
            add = random_ids(1000, seed=99)
            t0 = time.perf_counter()
            loaded.add_items([f"new{i}" for i in range(add.shape[0])], (add, np.full(add.shape[0], LENGTH)))
            out["add_1000_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded.retire_items([f"new{i}" for i in range(10)] + [str(x) for x in names[:10].astype(str)])
            out["retire_20_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded.save(Path(d) / "idx2", compact=False)
            out["save_after_add_s"] = time.perf_counter() - t0
            del loaded
    elif impl == "dict":
        from transformers import PrefixConstrainedLogitsProcessor

        seqs = np.concatenate([ids, np.full((ids.shape[0], 1), EOS)], axis=1).tolist()
        t0 = time.perf_counter()
        trie = GenreTrie(seqs)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_rss_mb"] = peak_rss_mb() - base_rss
        del seqs
        gc.collect()
        out["index_bytes"] = None  # see build_peak_rss_mb: a nested dict has no compact size
        fn = lambda b, sent: trie.get(sent.tolist()[PROMPT:])  # noqa: E731
        make = lambda: PrefixConstrainedLogitsProcessor(fn, num_beams=BEAMS)  # noqa: E731
    elif impl == "marisa":
        import marisa_trie
        from transformers import PrefixConstrainedLogitsProcessor

        t0 = time.perf_counter()
        trie = marisa_prefix_trie(ids)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_rss_mb"] = peak_rss_mb() - base_rss
        out["index_bytes"] = len(trie.tobytes())

        def fn(b, sent):
            return np.frombuffer(trie[_key(sent.tolist()[PROMPT:])][0], dtype=">u2").tolist()

        make = lambda: PrefixConstrainedLogitsProcessor(fn, num_beams=BEAMS)  # noqa: E731
    else:
        raise ValueError(impl)
    # correctness: every row's true next token is allowed at each depth
    proc = make()
    import torch

    scores = torch.zeros(BATCH * BEAMS, VOCAB)
    ok = True
    for d in range(LENGTH):
        ok &= check_allowed(proc(steps[d], scores), steps[d + 1])
    out["next_token_allowed"] = ok
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"threads_{threads}"] = time_steps(make, steps, repeats)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def string_ids(n: int) -> np.ndarray:
    """n distinct 10-character ids "i000000042" as a numpy bytes array (no Python string per id)."""
    out = np.empty((n, 10), dtype=np.uint8)
    out[:, 0] = ord("i")
    powers = 10 ** np.arange(8, -1, -1, dtype=np.int64)
    for lo in range(0, n, 1 << 22):  # chunked: a [n, 9] int64 digit matrix would cost 7 GB at 100M ids
        i = np.arange(lo, min(lo + (1 << 22), n), dtype=np.int64)
        out[lo:lo + i.shape[0], 1:] = (i[:, None] // powers[None, :] % 10 + ord("0")).astype(np.uint8)
    return out.view("S10").reshape(n)


class GenreTrie:
    """GENRE's trie (facebookresearch/GENRE, genre/trie.py): nested dicts, recursive add and get."""

    def __init__(self, sequences):
        self.trie_dict: dict = {}
        for s in sequences:
            GenreTrie._add(s, self.trie_dict)

    @staticmethod
    def _add(sequence, trie_dict):
        if sequence:
            if sequence[0] not in trie_dict:
                trie_dict[sequence[0]] = {}
            GenreTrie._add(sequence[1:], trie_dict[sequence[0]])

    def get(self, prefix):
        d = self.trie_dict
        for t in prefix:
            if t not in d:
                return []
            d = d[t]
        return list(d.keys())


_ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/"


def _key(tokens: list[int]) -> str:
    """A token prefix as an ASCII key, 3 base-64 characters per token (marisa keys are str; ASCII stays 1 byte)."""
    return "".join(_ALPHA[t >> 12] + _ALPHA[(t >> 6) & 63] + _ALPHA[t & 63] for t in tokens)


def marisa_prefix_trie(ids: np.ndarray):
    """marisa BytesTrie: key = the prefix tokens (ASCII), value = the allowed next tokens as big-endian uint16."""
    import marisa_trie

    ext = np.concatenate([ids, np.full((ids.shape[0], 1), EOS)], axis=1).tolist()
    nxt: dict[str, set] = {}
    for row in ext:
        k = _key(row)
        for d in range(LENGTH + 1):
            nxt.setdefault(k[: 3 * d], set()).add(row[d])
    items = [(k, np.array(sorted(v), dtype=">u2").tobytes()) for k, v in nxt.items()]
    del nxt
    return marisa_trie.BytesTrie(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="comma-separated id counts for all three impls")
    ap.add_argument("--big", default="10000000", help="comma-separated id counts for ours alone ('' to skip)")
    ap.add_argument("--impls", default="ours,dict,marisa")
    ap.add_argument("--repeats", type=int, default=5, help="decodes timed per impl (dict/marisa at >=1M: 2)")
    ap.add_argument("--out", default="", help="write the JSON here (also printed)")
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, n = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(impl, n, args.repeats)))
        return
    uptime_start = os.getloadavg()
    results = []
    runs = [(impl, int(n)) for n in args.sizes.split(",") if n for impl in args.impls.split(",")]
    runs += [("ours", int(n)) for n in args.big.split(",") if n]
    for impl, n in runs:
        reps = args.repeats if impl == "ours" or n < 1_000_000 else max(3, args.repeats // 2)
        t0 = time.time()
        p = subprocess.run([sys.executable, __file__, "--worker", impl, str(n), "--repeats", str(reps)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if p.returncode != 0:
            results.append({"impl": impl, "n_ids": n, "error": p.stderr[-2000:]})
        else:
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
        results[-1]["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    ratios: dict = {}
    for n in sorted({r["n_ids"] for r in results}):
        by = {r["impl"]: r for r in results if r["n_ids"] == n and "error" not in r}
        if "ours" not in by:
            continue
        for peer in ("dict", "marisa"):
            for th in (1, 2):
                if peer in by:
                    a, b = by[peer][f"threads_{th}"], by["ours"][f"threads_{th}"]
                    ratios[f"{peer}/ours@{n}/threads_{th}"] = {
                        "per_depth": [round(x / y, 1) for x, y in zip(a["mask_ms_per_depth"], b["mask_ms_per_depth"])],
                        "median_sum": round(a["mask_ms_sum"] / b["mask_ms_sum"], 1)}
        if "marisa" in by and by["marisa"].get("index_bytes"):
            ratios[f"memory ours/marisa@{n}"] = round(by["ours"]["index_bytes"] / by["marisa"]["index_bytes"], 2)
    doc = {"command": " ".join(["python", "bench/bench_trie.py"] + sys.argv[1:]),
           "machine": f"{os.cpu_count()} cores (shared with other sessions)",
           "loadavg_start": uptime_start, "loadavg_end": os.getloadavg(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fresh_scores": True,
           "setup": {"vocab": VOCAB, "id_tokens": LENGTH, "rows": BATCH * BEAMS, "eos": EOS,
                     "statistic": "median over repeats of one id's decode (sum of 5 steps), fresh scores per step"},
           "mask_ratio_vs_dict_1m": ratios.get("dict/ours@1000000/threads_1", {}).get("median_sum"),
           "mask_ratio_vs_dict_1m_2threads": ratios.get("dict/ours@1000000/threads_2", {}).get("median_sum"),
           "results": results, "ratios": ratios}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
