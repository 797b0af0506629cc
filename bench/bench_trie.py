"""Mask cost per decoding step, index memory and build cost: our flat trie vs GENRE's nested-dict trie (through
transformers' PrefixConstrainedLogitsProcessor) vs a marisa BytesTrie (prefix -> next tokens), same run, same data.

    python bench/bench_trie.py --sizes 1000,100000,1000000 --big 10000000 > bench/results/trie.json

Setup (issue 4): random 4-token ids over a 32k vocabulary, batch 8 x 20 beams = 160 rows, EOS ends every id, so one
id's decode is 5 steps (depth 0..4, the last allows only EOS). Every (implementation, size) runs in a fresh
subprocess so build time and peak RSS are its own. Prints one JSON object.
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


def time_steps(make_processor, steps, repeats: int) -> list[float]:
    """Median ms per depth over repeats; each repeat is one fresh decode (depth 0 -> 4)."""
    import torch

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(BATCH * BEAMS, VOCAB, generator=g)
    per = [[] for _ in steps]
    for _ in range(repeats):
        proc = make_processor()
        for d, ids in enumerate(steps):
            t0 = time.perf_counter()
            out = proc(ids, scores)
            per[d].append((time.perf_counter() - t0) * 1000)
            del out
    return [float(np.median(p)) for p in per]


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
        from dlsearch.decoding.constraint import TrieConstraint
        from dlsearch.decoding.index import Segment, TrieIndex
        from dlsearch.decoding.trie import build_trie

        t0 = time.perf_counter()
        trie, _ = build_trie(ids, np.full(ids.shape[0], LENGTH), VOCAB)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_rss_mb"] = peak_rss_mb() - base_rss
        out["index_bytes"] = trie.nbytes()
        out["arrays"] = {k: int(v.nbytes) for k, v in trie.arrays().items()}
        index = TrieIndex(Segment(trie, _RowNames(trie.n_items)), {"mode": "whole", "end_token_id": EOS, "retired": []})
        make = lambda: TrieConstraint(index, eos_token_id=EOS, rows_per_query=BEAMS)  # noqa: E731
        if n <= 1_000_000:  # delta update without rebuilding the base
            add = random_ids(1000, seed=99)
            base_arrays = index.base.trie.child_token
            t0 = time.perf_counter()
            index.add_items([f"new{i}" for i in range(add.shape[0])], add.tolist())
            out["add_1000_s"] = time.perf_counter() - t0
            out["add_rebuilt_base"] = index.base.trie.child_token is not base_arrays
            index.delta = None
        # save + memory-mapped load time
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            trie.save(Path(d) / "t.safetensors")
            out["save_s"] = time.perf_counter() - t0
            from dlsearch.decoding.trie import TokenTrie

            t0 = time.perf_counter()
            TokenTrie.load(Path(d) / "t.safetensors")
            out["load_mmap_s"] = time.perf_counter() - t0
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
    ms = time_steps(make, steps, repeats)
    out["mask_ms_per_depth"] = ms
    out["mask_ms_sum"] = float(sum(ms))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


class _RowNames:
    """Item names '0'..'n-1' without materializing n strings (benchmarks at 10M ids)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        return str(i)

    def __iter__(self):
        return (str(i) for i in range(self.n))


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
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, n = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(impl, n, args.repeats)))
        return
    results = []
    runs = [(impl, int(n)) for n in args.sizes.split(",") if n for impl in args.impls.split(",")]
    runs += [("ours", int(n)) for n in args.big.split(",") if n]
    for impl, n in runs:
        reps = args.repeats if impl == "ours" or n < 1_000_000 else 2
        t0 = time.time()
        p = subprocess.run([sys.executable, __file__, "--worker", impl, str(n), "--repeats", str(reps)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if p.returncode != 0:
            results.append({"impl": impl, "n_ids": n, "error": p.stderr[-2000:]})
        else:
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
        results[-1]["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    ratios = {}
    for n in sorted({r["n_ids"] for r in results}):
        by = {r["impl"]: r for r in results if r["n_ids"] == n and "error" not in r}
        if "ours" in by:
            for peer in ("dict", "marisa"):
                if peer in by:
                    ratios[f"{peer}/ours@{n}"] = {
                        "per_depth": [round(a / b, 1) for a, b in zip(by[peer]["mask_ms_per_depth"], by["ours"]["mask_ms_per_depth"])],
                        "sum": round(by[peer]["mask_ms_sum"] / by["ours"]["mask_ms_sum"], 1)}
            if "marisa" in by and by["marisa"].get("index_bytes"):
                ratios[f"memory ours/marisa@{n}"] = round(by["ours"]["index_bytes"] / by["marisa"]["index_bytes"], 2)
    load = os.getloadavg()
    print(json.dumps({"machine": f"{os.cpu_count()} cores (shared with other sessions)", "loadavg": load,
                      "setup": {"vocab": VOCAB, "id_tokens": LENGTH, "rows": BATCH * BEAMS, "eos": EOS},
                      "results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
