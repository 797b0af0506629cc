"""How well a model has memorized the catalog: greedy, unconstrained title->id generation.

exact_match = share of items whose generated id text equals their code; valid_rate = share of generations that
are the code of some catalog item (right or wrong). Written to `<model_dir>/memorization.json` keyed by catalog
hash (retrieval/router.py load_memorization reads it). `CurveCallback` records the same measure on a fixed
sample every N steps (learning curve JSON + PNG).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import TrainerCallback

from dlsearch.data.catalog import Catalog
from dlsearch.data.files import atomic_write_json
from dlsearch.data.ids import IdMap
from dlsearch.data.prompts import apply_chat_template, encode_prompts, prompt_for_item_task


@torch.no_grad()
def generate_ids(model: Any, tokenizer: Any, titles: Sequence[str], *, max_new_tokens: int, batch_size: int = 256) -> list[str]:
    """Greedy completions of title->id prompts, cut at the first newline (prompts encoded as in training)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs: list[str] = []
    try:
        for s in range(0, len(titles), batch_size):
            prompts = [apply_chat_template(tokenizer, prompt_for_item_task("title->id", title=t)["prompt"]) for t in titles[s:s + batch_size]]
            enc = encode_prompts(tokenizer, prompts).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]  # [batch, <= max_new_tokens]
            outs += [t.split("\n")[0].strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        if was_training:
            model.train()
    return outs


def code_token_budget(tokenizer: Any, idmap: IdMap) -> int:
    """max_new_tokens: the longest tokenized completion plus one (EOS)."""
    return max(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in idmap.codes.values()) + 1


def measure(model: Any, tokenizer: Any, catalog: Catalog, idmap: IdMap, item_ids: Sequence[str] | None = None,
            *, batch_size: int = 256) -> dict[str, Any]:
    """exact_match and valid_rate of greedy title->id over `item_ids` (default: the whole catalog)."""
    ids = list(item_ids) if item_ids is not None else catalog.ids
    t0 = time.perf_counter()
    gen = generate_ids(model, tokenizer, [catalog[i].title for i in ids],
                       max_new_tokens=code_token_budget(tokenizer, idmap), batch_size=batch_size)
    exact = sum(g == idmap.code(i) for g, i in zip(gen, ids))
    valid = sum(idmap.lookup(g) is not None for g in gen)
    return {"n_items": len(ids), "exact_match": exact / max(1, len(ids)), "valid_rate": valid / max(1, len(ids)),
            "eval_seconds": round(time.perf_counter() - t0, 2), "examples": [{"item_id": i, "code": idmap.code(i), "generated": g}
                                                                       for i, g in list(zip(ids, gen))[:5]]}


measure_memorization = measure  # the public name (dlsearch.measure_memorization)


def write_memorization(model_dir: str | Path, result: dict[str, Any], *, catalog: Catalog, idmap: IdMap, step: int) -> dict[str, Any]:
    """Add/replace this catalog's entry in <model_dir>/memorization.json."""
    path = Path(model_dir) / "memorization.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[catalog.content_hash()] = {
        "scheme": idmap.scheme, "task": "title->id", "n_items": result["n_items"],
        "exact_match": result["exact_match"], "valid_rate": result["valid_rate"], "step": step,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, data)
    return data


class CurveCallback(TrainerCallback):
    """Exact match on a fixed item sample every `every` steps, on the main process; eval time is kept apart so
    training wall time can be reported without it."""

    def __init__(self, tokenizer: Any, catalog: Catalog, idmap: IdMap, item_ids: Sequence[str], every: int, batch_size: int = 256,
                 path: Path | None = None):
        self.tokenizer, self.catalog, self.idmap = tokenizer, catalog, idmap
        self.item_ids, self.every, self.batch_size = list(item_ids), every, batch_size
        self.points: list[dict[str, Any]] = []
        self.path = path  # rewritten after every point, so a long run's curve can be watched
        self.eval_seconds = 0.0
        self.t0 = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.perf_counter()

    def _point(self, state: Any, model: Any) -> None:
        t = time.perf_counter()
        r = measure(model, self.tokenizer, self.catalog, self.idmap, self.item_ids, batch_size=self.batch_size)
        self.eval_seconds += time.perf_counter() - t
        loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        self.points.append({"step": state.global_step, "exact_match": r["exact_match"], "valid_rate": r["valid_rate"],
                            "train_seconds": round(time.perf_counter() - self.t0 - self.eval_seconds, 2), "loss": loss,
                            "load_avg": round(os.getloadavg()[0], 2)})
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.points, indent=1))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.every > 0 and state.global_step % self.every == 0 and state.is_world_process_zero:
            self._point(state, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.every > 0 and state.is_world_process_zero and (not self.points or self.points[-1]["step"] != state.global_step):
            self._point(state, model)


def save_curve(points: list[dict[str, Any]], out_dir: str | Path, *, title: str) -> None:
    """learning_curve.json and learning_curve.png (exact match and valid rate against step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    (out / "learning_curve.json").write_text(json.dumps(points, indent=1))
    if not points:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [p["step"] for p in points]
    ax.plot(steps, [p["exact_match"] for p in points], marker="o", label="exact match")
    ax.plot(steps, [p["valid_rate"] for p in points], marker=".", linestyle="--", label="valid id rate")
    ax.set_xlabel("step")
    ax.set_ylabel("title->id (greedy, unconstrained)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=100)
    plt.close(fig)
