"""One tiny run of the production recipe (configs/finetune-movielens-cpu.yaml with tiny overrides), shared by the tests.

Sizes: 40 MovieLens movies, random ids, a 2-layer 64-dim Llama (configs/models/llama-tiny.yaml), 30 full steps
then 8 LoRA steps. The run goes through the real entry point (`python -m dlsearch finetune`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "finetune-movielens-cpu.yaml"
N_ITEMS = 40
INDEX_STEPS = 30
LORA_STEPS = 12

TINY = [
    f"data.max_items={N_ITEMS}", "data.id_scheme=random", "data.max_examples_per_task=64", "data.max_history=3",
    "model.size=configs/models/llama-tiny.yaml", "model.tokenizer.vocab_size=400",
    f"stages.index.train.max_steps={INDEX_STEPS}", "stages.index.train.batch_size=8", "stages.index.train.lr=5.0e-3",
    "stages.index.train.save_steps=10", "stages.index.train.save_total_limit=3", "stages.index.train.logging_steps=5",
    f"stages.history.train.max_steps={LORA_STEPS}", "stages.history.train.batch_size=8",
    "stages.history.train.save_steps=6", "stages.history.train.logging_steps=3", "stages.history.lora.r=8",
    "stages.history.train.lr=1.0e-2", "stages.history.tasks={history->next_item: 0.25, title->id: 2.0}",
    "eval.curve_every=10", "eval.curve_sample=20",
]


def rows_loss(model: Any, examples: Any, tokenizer: Any) -> float:
    """Mean per-token loss of `model` on prompt -> completion rows (EOS included), in one right-padded batch through the
    training loss (finetune.train.completion_loss): deterministic, unlike a logged training loss, which depends on
    which rows each step's batch drew."""
    from dlsearch.finetune.train import completion_loss

    rows = []
    for row in examples:
        p = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + c, [-100] * len(p) + c))
    width = max(len(ids) for ids, _ in rows)
    batch = {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i, _ in rows]),
             "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows]),
             "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])}
    with torch.no_grad():
        return completion_loss(model.eval(), batch).item()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return e


def finetune_cmd(out: Path, *extra: str, entry: str = "dlsearch") -> list[str]:
    sets = [a for kv in [f"output_dir={out}", *TINY, *extra] for a in ("--set", kv)]
    mod = ["-m", "dlsearch", "finetune"] if entry == "dlsearch" else ["-m", "dlsearch.finetune"]
    return [sys.executable, *mod, "--config", str(RECIPE), *sets]


def run_finetune(out: Path, *extra: str, resume: bool = False, timeout: int = 240) -> dict:
    cmd = finetune_cmd(out, *extra) + (["--resume"] if resume else [])
    p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "run_summary.json").read_text())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("tiny_run")
    return out, run_finetune(out)
