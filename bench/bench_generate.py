"""`generate` time with the trie constraint over the same call without it, for the same number of new tokens
(min_new_tokens = max_new_tokens), with a random ~100M-parameter Llama and the tiny test model, per corpus size.

    python bench/bench_generate.py --sizes 1000,100000,1000000 --models tiny,100m > bench/results/generate.json

Setup (issue 4): random 4-token ids over a 32k vocabulary; batch 8 x 20 beams; 5 new tokens (id + EOS). The
constrained and unconstrained calls alternate, repeated, and the medians are compared. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from bench_trie import BATCH, BEAMS, EOS, LENGTH, VOCAB, _RowNames, random_ids  # noqa: E402

MODELS = {  # name -> LlamaConfig overrides; 100m: 8 layers x 768 with a 32k vocab = ~106M parameters
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4),
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                 num_key_value_heads=12),
}
PROMPT_LEN = 16


def make_model(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=0, bos_token_id=1,
                      max_position_embeddings=256, **MODELS[name])
    return LlamaForCausalLM(cfg).eval()


class TimedConstraint:
    """Wraps the processor and sums the seconds spent inside it: the constraint's share of a constrained call,
    a figure the machine's load disturbs far less than a ratio of two wall-clock times."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        return out


@torch.no_grad()
def timed_generate(model, ids, processor=None) -> float:
    from transformers import LogitsProcessorList

    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=BEAMS,
                         num_return_sequences=BEAMS, max_new_tokens=LENGTH + 1, min_new_tokens=LENGTH + 1,
                         pad_token_id=0, eos_token_id=EOS, do_sample=False,
                         logits_processor=LogitsProcessorList([processor] if processor else []))
    dt = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + LENGTH + 1, out.shape  # same number of new tokens both ways
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--models", default="tiny,100m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from dlsearch.decoding.constraint import TrieConstraint
    from dlsearch.decoding.index import Segment, TrieIndex
    from dlsearch.decoding.trie import build_trie

    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(3, VOCAB, size=(BATCH, PROMPT_LEN)))
    results = []
    models = {m: make_model(m) for m in args.models.split(",") if m}
    for n in [int(x) for x in args.sizes.split(",") if x]:
        toks = random_ids(n)
        t0 = time.perf_counter()
        trie, _ = build_trie(toks, np.full(toks.shape[0], LENGTH), VOCAB)
        build_s = time.perf_counter() - t0
        del toks
        index = TrieIndex(Segment(trie, _RowNames(trie.n_items)), {"mode": "whole", "end_token_id": EOS, "retired": []})
        for name, model in models.items():
            timed_generate(model, ids)  # warm-up
            plain, constrained, inside = [], [], []
            for _ in range(args.repeats):
                plain.append(timed_generate(model, ids))
                proc = TimedConstraint(TrieConstraint(index, eos_token_id=EOS, rows_per_query=BEAMS))
                constrained.append(timed_generate(model, ids, proc))
                inside.append(proc.seconds)
            r = {"model": name, "params": sum(p.numel() for p in model.parameters()), "n_ids": n,
                 "build_s": round(build_s, 3), "unconstrained_s": float(np.median(plain)),
                 "constrained_s": float(np.median(constrained)),
                 "ratio": float(np.median(constrained) / np.median(plain)),
                 "ratio_of_minima": float(np.min(constrained) / np.min(plain)),  # least disturbed call of each kind
                 "processor_s": float(np.median(inside)),
                 "processor_share": float(np.median(np.array(inside) / np.array(constrained))),
                 "ratio_from_processor_time": float(1 + np.median(np.array(inside) / (np.array(constrained) - np.array(inside)))),
                 "raw": {"unconstrained": plain, "constrained": constrained, "processor": inside}, "loadavg": os.getloadavg()}
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps({"machine": f"{os.cpu_count()} cores (shared with other sessions)", "threads": args.threads,
                      "setup": {"batch": BATCH, "beams": BEAMS, "new_tokens": LENGTH + 1, "prompt": PROMPT_LEN,
                                "vocab": VOCAB}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
