"""`dlsearch evaluate --strategies direct router`: wall time with the router reusing direct search's rankings vs
without (issue 11, item 11: direct search ran twice, once as its own system and again inside the router).

    nice -n 5 python bench/bench_evaluate_reuse.py --dialogues 20 --repeats 2 --out bench/results/evaluate_reuse.json

A tiny random Llama (tests/decoding_fixtures.write_tiny_direct: 2 layers x 64 dims, tokenizer trained on the
titles) and its trie over the movies of the first ReDial dialogues; the last --dialogues of them are the test split.
Each repeat runs dlsearch.app.runner.run_evaluation (what `dlsearch evaluate` runs) twice in alternation: 'before'
builds every system's searcher on its own (SharedStrategies.build replaced by a plain factory call: the code before
this change), 'after' is the shipped path. Reports wall seconds, direct-search prompts, load, and whether both runs
ranked every query identically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dlsearch.data.files import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dialogues", type=int, default=20, help="test dialogues (as many again for training counts)")
    p.add_argument("--beams", type=int, default=10)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="bench/results/evaluate_reuse.json")
    args = p.parse_args()

    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from decoding_fixtures import write_tiny_direct

    from dlsearch.app.recommend import SharedStrategies
    from dlsearch.app.runner import EvaluateConfig, run_evaluation
    from dlsearch.data.catalog import Catalog
    from dlsearch.data.formats import save_conversations
    from dlsearch.data.redial import load_dialogues, load_redial_movies
    from dlsearch.data.turns import recommender_turns
    from dlsearch.decoding.direct import DirectSearch

    d = Path(tempfile.mkdtemp(prefix="bench-evaluate-reuse-"))
    movies = load_redial_movies()
    dialogues = load_dialogues(movies)[: 2 * args.dialogues]
    catalog = Catalog([it for it in movies if it.id in {i for c in dialogues for i in c.mentioned()}])
    write_tiny_direct(d, catalog, beams=args.beams)
    save_conversations(d / "conversations" / "train.jsonl", [t for c in dialogues[: args.dialogues] for t in recommender_turns(c)])
    test = [t for c in dialogues[args.dialogues:] for t in recommender_turns(c)]
    save_conversations(d / "conversations" / "test.jsonl", test)
    (d / "manifest.json").write_text(json.dumps({"dataset": "redial", "dataset_name": "redial", "split": "seeded"}))
    (d / "recommend.yaml").write_text(yaml.safe_dump({
        "catalog": str(d / "catalog.jsonl"), "k": 10, "cache_dir": str(d / "cache"), "model_dir": str(d / "model"),
        "policy": {"unmeasured": "fallback"},
        "strategies": {"direct": {"enabled": True, "factory": "direct", "options": {"index": str(d / "trie"), "beams": args.beams}},
                       "bm25": {"enabled": True, "index": None}}}))

    prompts = [0]
    real = DirectSearch.search_with_stats

    def counting(self, queries, k, **kw):
        prompts[0] += len(queries)
        return real(self, queries, k, **kw)

    DirectSearch.search_with_stats = counting
    shared_build = SharedStrategies.build

    def run(reuse: bool) -> tuple[float, int, dict]:
        SharedStrategies.build = shared_build if reuse else (lambda self, factory, **kw: factory(**kw))
        prompts[0] = 0
        cfg = EvaluateConfig(task="turns", data=str(d), strategies=["direct", "router"], depth=args.depth, modes=["excluded"],
                             out=str(d / "eval"), strategy_options={"model_dir": str(d / "model"), "trie": str(d / "trie"),
                                                                    "beams": args.beams, "recommend_config": str(d / "recommend.yaml")})
        t = time.perf_counter()
        report, _ = run_evaluation(cfg, print_table=False)
        return time.perf_counter() - t, prompts[0], report["modes"]["excluded"]["_runs"]

    rows, loads, identical = [], [os.getloadavg()[0]], True
    for r in range(args.repeats):
        for reuse in (False, True):
            wall, n_prompts, runs = run(reuse)
            loads.append(os.getloadavg()[0])
            rows.append({"repeat": r, "reuse": reuse, "wall_s": round(wall, 1), "direct_prompts": n_prompts})
            print(rows[-1], flush=True)
            if reuse:
                identical &= runs == ref
            else:
                ref = runs
    before = [x["wall_s"] for x in rows if not x["reuse"]]
    after = [x["wall_s"] for x in rows if x["reuse"]]
    result = {
        "command": "nice -n 5 python bench/bench_evaluate_reuse.py " + " ".join(sys.argv[1:]),
        "what": "run_evaluation (dlsearch evaluate) --strategies direct router, tiny random model, ReDial turns",
        "test_turns": len(test), "catalog_items": len(catalog), "beams": args.beams, "depth": args.depth,
        "runs": rows, "median_wall_s": {"before": statistics.median(before), "after": statistics.median(after)},
        "identical_rankings": identical, "load_avg_1m": [round(x, 2) for x in loads],
        "torch_threads": __import__("torch").get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write_json(REPO / args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
