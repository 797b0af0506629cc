"""Fine-tuning: model factory, SFT recipes (full / LoRA / QLoRA via trl + peft), memorization measurement."""

import os as _os

# On a shared CPU, OpenMP threads that busy-wait for each other are 10-20x slower than one thread (measured:
# 5.3 s vs 0.29 s per step of a 1M-param Llama at load 7 on 2 cores); passive waiting removes the collapse.
# It only takes effect if set before torch starts OpenMP, so it lives in the package import.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
