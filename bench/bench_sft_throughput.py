"""Throughput of our SFT path (trl SFTTrainer as built by finetune.train) against a plain PyTorch loop.

    python bench/bench_sft_throughput.py --config configs/finetune-movielens-cpu.yaml --steps 60 [--set data.id_scheme=random]

Same model (the recipe's first stage, built from the same init dir), the same collated batches (taken from the
trainer's own dataloader), the same batch size, in one process. Prints JSON: non-padding tokens/s of each path
and their ratio (goal >= 0.9), with the load average (the machine may be shared), alternating the two paths
--repeats times and comparing the fastest of each. The SFT time includes what the raw loop skips: collation of
each batch by the trainer's dataloader, scheduler, logging and callbacks.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path


import dlsearch.finetune  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch starts)
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from dlsearch.finetune.config import load_recipe  # noqa: E402
from dlsearch.finetune.sources import load_source  # noqa: E402
from dlsearch.finetune.train import build_trainer, prepare_base  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.c0, self.c1 = warmup, None, None, None, None

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
        if state.global_step == self.warmup:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.t1, self.c1 = time.perf_counter(), time.process_time()


def raw_loop(model: torch.nn.Module, batches: list[dict], lr: float, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds for batches[warmup:] of forward + backward + clip + AdamW step, the minimum a training
    loop does."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    t0 = c0 = 0.0
    for i, b in enumerate(batches):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/finetune-movielens-cpu.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="alternating raw/SFT runs; the fastest of each is compared")
    ap.add_argument("--out", default="/tmp/dlsearch_bench_sft")
    ap.add_argument("--profile", action="store_true", help="cProfile the SFT path; top functions by own time in the JSON")
    args = ap.parse_args()

    cfg = load_recipe(args.config, [f"output_dir={args.out}", *args.overrides])
    stage = cfg.stages[0]
    stage.train.save_steps = 10**9
    stage.train.logging_steps = 10**9
    cfg.eval.curve_every = 0
    catalog, idmap, extras = load_source(cfg.data)
    base = prepare_base(cfg, catalog, idmap)
    trainer, tokenizer, _ = build_trainer(cfg, stage, base, Path(args.out) / "bench", catalog, idmap, extras)

    # The very batches the trainer will see (same seed -> same order), collated by its own collator. Both paths run
    # within the first epoch (a second epoch has another order), so --steps is capped at one epoch.
    batches = [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "labels")} for b in trainer.get_train_dataloader()]
    n = min(args.steps + args.warmup, len(batches))
    batches = batches[:n]
    steps = n - args.warmup
    stage.train.max_steps = n
    trainer.args.max_steps = n
    tokens = int(sum(b["attention_mask"].sum() for b in batches[args.warmup:]))
    padded = sum(b["input_ids"].numel() for b in batches[args.warmup:])

    # The machine is shared: load drifts within seconds. Alternate raw / SFT `--repeats` times on fresh copies of
    # the same initial model and compare the fastest run of each (interference only ever adds time).
    init_state = copy.deepcopy(trainer.model.state_dict())
    load0 = os.getloadavg()[0]
    raws, sfts, raw_cpu, sft_cpu = [], [], [], []
    prof = None
    for rep in range(args.repeats):
        raw_model = copy.deepcopy(trainer.model)
        raw_model.load_state_dict(init_state)
        wall, cpu = raw_loop(raw_model, batches, stage.train.lr, args.warmup)
        raws.append(wall)
        raw_cpu.append(cpu)
        del raw_model
        if rep > 0:
            trainer, tokenizer, _ = build_trainer(cfg, stage, base, Path(args.out) / "bench", catalog, idmap, extras)
            trainer.args.max_steps = n
        timer = StepTimer(args.warmup)
        trainer.add_callback(timer)
        if args.profile and rep == args.repeats - 1:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        trainer.train()
        assert trainer.state.global_step == n, (trainer.state.global_step, n)
        if prof is not None:
            prof.disable()
        sfts.append(timer.t1 - timer.t0)
        sft_cpu.append(timer.c1 - timer.c0)
    raw, sft = min(raws), min(sfts)
    top = []
    if prof is not None:
        import pstats

        st = pstats.Stats(prof)
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]  # by own (total) time
        top = [{"fn": f"{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": v[1], "own_s": round(v[2], 3), "cum_s": round(v[3], 3)} for k, v in rows]
        # Where the trainer's step time goes: cumulative time of the python-level functions of the training loop.
        loop = [kv for kv in st.stats.items() if any(x in kv[0][0] for x in ("transformers/trainer", "trl/", "accelerate/", "data_collator", "datasets/"))]
        top += [{"fn": f"{Path(k[0]).parent.name}/{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": v[1], "cum_s": round(v[3], 3)}
                for k, v in sorted(loop, key=lambda kv: -kv[1][3])[:25]]
    print(json.dumps({
        "config": args.config, "overrides": args.overrides, "method": stage.method,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "batch_size": stage.train.batch_size, "steps_timed": steps, "non_padding_tokens": tokens,
        "padding_share": round(1 - tokens / padded, 3),
        "raw_tokens_per_s": round(tokens / raw, 1), "raw_seconds": [round(x, 2) for x in raws],
        "sft_tokens_per_s": round(tokens / sft, 1), "sft_seconds": [round(x, 2) for x in sfts],
        "ratio_sft_over_raw": round(raw / sft, 3), "ratio_per_repeat": [round(r / s_, 3) for r, s_ in zip(raws, sfts)],
        # CPU seconds of this process: what each path computes, less sensitive to other tenants than wall time
        "raw_cpu_seconds": [round(x, 2) for x in raw_cpu], "sft_cpu_seconds": [round(x, 2) for x in sft_cpu],
        "ratio_sft_over_raw_cpu_time": round(min(raw_cpu) / min(sft_cpu), 3),
        "loss_mode": trainer.loss_mode,  # --set stages.<name>.train.loss=plain|completion|fused to compare
        "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "profile_top_own_time": top,
        "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2), "machine": f"{os.cpu_count()} CPUs, shared",
    }, indent=1))


if __name__ == "__main__":
    main()
