"""Supervised fine-tuning recipes: one or more stages of trl SFTTrainer (full, LoRA or QLoRA) over weighted task
mixtures, each stage saved with a manifest and its measured memorization.

    accelerate launch -m dlsearch.finetune --config configs/finetune-movielens-cpu.yaml            # 1 process (CPU or GPU)
    accelerate launch --multi_gpu --num_processes 2 -m dlsearch.finetune --config ...      # 2 gloo processes on CPU too
    torchrun --nproc_per_node 2 -m dlsearch.finetune --config ...
    dlsearch finetune --config configs/finetune-movielens-cpu.yaml [--set stages.index.train.lr=3e-3] [--resume]

Output layout: stage k < last -> <output_dir>/stages/<name>/, the last stage -> <output_dir>/ itself; a from-scratch
model is first built in <output_dir>/init/. Checkpoints live in <stage dir>/checkpoints/ (every save_steps).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AttentionInterface, TrainerCallback
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from dlsearch.data.catalog import Catalog
from dlsearch.data.files import atomic_write_json
from dlsearch.data.ids import IdMap
from dlsearch.data.prompts import apply_chat_template
from dlsearch.finetune.config import (ConfigError, RecipeConfig, StageConfig, TrainingInterrupted, TrainSettings,
                                      load_model_size)
from dlsearch.finetune.loading import load_base, load_finetuned, load_tokenizer, model_dtype, safetensors_problem
from dlsearch.finetune.manifest import MANIFEST, read_manifest, write_manifest
from dlsearch.finetune.memorization import CurveCallback, measure, save_curve, write_memorization
from dlsearch.finetune.mixture import weighted_mixture
from dlsearch.finetune.model_factory import id_tokens, init_scratch_model, model_fingerprint
from dlsearch.finetune.sources import load_source, task_examples


# --- hardware-dependent defaults ------------------------------------------------------------------------------------

def on_cuda() -> bool:
    return torch.cuda.is_available()


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 units with native bf16 matmuls (Sapphire Rapids+, Zen 4+)


def read_cpuinfo() -> str:
    """/proc/cpuinfo, or "" where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_bf16_units(cpuinfo: str) -> list[str]:
    """The CPU_BF16_FLAGS among the flags of a /proc/cpuinfo text."""
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return [f for f in CPU_BF16_FLAGS if f in flags]


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively: an `amx_bf16` or `avx512_bf16` flag in /proc/cpuinfo (Linux;
    False where the file is missing). Without them bf16 autocast is emulated and slower than float32."""
    return bool(cpu_bf16_units(read_cpuinfo() if cpuinfo is None else cpuinfo))


def use_bf16(t: TrainSettings) -> bool:
    """train.bf16, or when unset (auto): CUDA with bf16 support, or a CPU with bf16 units. On such a CPU autocast
    ran LoRA on SmolLM2-135M 3.3x faster than float32 (issue 10: 264 vs 80 tokens/s on a Xeon with AMX)."""
    if t.bf16 is not None:
        return t.bf16
    return torch.cuda.is_bf16_supported() if on_cuda() else cpu_has_bf16()


def sft_args(t: TrainSettings, out: Path, *, seed: int) -> Any:
    """SFTConfig from our settings. trl defaults bf16=True and gradient_checkpointing=True; on a CPU without bf16
    units both only cost time (measured 6-8x slower), so they follow the hardware unless set explicitly.
    bf16=True with use_cpu=True makes accelerate run forward and loss under torch.autocast("cpu", bfloat16); the
    weights and optimizer state stay float32 (mixed precision, not a bf16 model)."""
    from trl import SFTConfig

    cuda = on_cuda()
    bf16 = use_bf16(t)
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # transformers 5.23 renamed gradient_checkpointing -> activation_checkpointing (the old name a deprecated alias
    # until v6); older 5.x (5.17 on the GPU image) knows only the old one
    ckpt = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else "gradient_checkpointing"
    # SIGTERM (a scheduler's time limit, a spot machine, `kill`): transformers' JIT checkpoint saves the step reached
    # and stops; train_stage then refuses to mark the stage complete. One process only: ranks of a distributed run
    # would stop at different steps and wait on each other's collective save. Older 5.x lack the option.
    jit = (not multi and "enable_jit_checkpoint" in SFTConfig.__dataclass_fields__
           and threading.current_thread() is threading.main_thread())
    return SFTConfig(
        output_dir=str(out), seed=seed, data_seed=seed,
        per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
        num_train_epochs=t.epochs, max_steps=t.max_steps, max_length=t.max_length, max_grad_norm=t.max_grad_norm,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps, report_to="none", disable_tqdm=False,
        bf16=bf16, fp16=False, train_sampling_strategy=t.sampling, **{ckpt: t.gradient_checkpointing},
        use_cpu=not cuda, ddp_backend=("gloo" if multi and not cuda else None),
        dataloader_num_workers=t.dataloader_workers, completion_only_loss=True,
        remove_unused_columns=True, dataset_num_proc=None, **({"enable_jit_checkpoint": True} if jit else {}),
    )


def sdpa_float32(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention computed in float32 inside a bf16-autocast step, its output in the dtype SDPA gives.

    On a CPU, PyTorch's bf16 flash-attention backward was the second-costliest operator of a LoRA step on
    SmolLM2-135M (0.35-0.42 s of self CPU a step; 0.07-0.11 s in float32: bench/bench_bf16_lora.py), while the
    inputs it needs in float32 are small ([batch, heads, length, 64]). The linear layers stay in bf16."""
    device = query.device.type
    # the dtype SDPA itself returns: autocast's (bf16) inside autocast, else the query's
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(device_type=device, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(dtype), weights


AttentionInterface.register("sdpa_float32", sdpa_float32)
AttentionMaskInterface.register("sdpa_float32", sdpa_mask)  # the masks SDPA gets (else an eager additive mask)


@contextlib.contextmanager
def float32_attention(model: Any, enabled: bool) -> Any:
    """A model using SDPA attention uses sdpa_float32 inside the block (a bf16-autocast stage on a CPU: 1.08x and
    1.12x the tokens/s in two bench runs, bench/bench_bf16_lora.py), and its own implementation again after it, so
    what is saved, merged or reloaded names no attention function of ours."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not enabled or getattr(base.config, "_attn_implementation", None) != "sdpa":
        yield
        return
    base.set_attn_implementation("sdpa_float32")
    try:
        yield
    finally:
        base.set_attn_implementation("sdpa")


class MaskDropout(torch.nn.Module):
    """Inverted dropout for CPU tensors with a cheaper mask: 16 random bits per element, four elements from each int64
    that torch's own generator fills (`random_(-2**63, None)`: all 64 bits), compared with a threshold, and applied as a
    multiplier. torch's CPU dropout draws one Bernoulli per element in a single thread; with LoRA dropout on every
    linear layer (7 a block on Llama) that was 28 % of a ReDial LoRA step on SmolLM2-135M and left the second core
    mostly idle (py-spy, 2026-12-04). Under CPU autocast the input is cast to autocast's dtype first (the LoRA A layer
    it feeds would cast it anyway), so the mask, the product and the multiplier backward keeps are half the size:
    a LoRA step (r 16, every linear layer, bf16 autocast) keeps 1,973 MiB for backward instead of 2,334 with torch's dropout
    and runs 1.2x faster in bench/bench_lora_dropout.py, but the ReDial recipe's real steps only 1.05-1.09x (docs).
    The drop probability becomes round(p * 65536) / 65536 (0.05 -> 0.0500031); masks follow torch.manual_seed and the
    generator state that checkpoints save. Other devices, p of 0 or 1, and eval mode use torch's dropout."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.threshold = -32768 + round(self.p * 65536)  # int16 bits below it (round(p * 65536) of 65536) drop
        self.scale = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return torch.nn.functional.dropout(x, self.p, self.training)
        if torch.is_autocast_enabled("cpu"):  # the LoRA A layer it feeds computes in autocast's dtype: cast first,
            x = x.to(torch.get_autocast_dtype("cpu"))  # so the mask, the product and what backward keeps are half size
        n = x.numel()
        bits = torch.empty(((n + 3) // 4,), dtype=torch.int64, device=x.device).random_(-2**63, None)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return (x * self.scale) * keep.to(x.dtype)  # the scale in float32 arithmetic, the mask exact

    def extra_repr(self) -> str:
        return f"p={self.p}"


def lora_dropout_slots(model: Any) -> list[tuple[torch.nn.ModuleDict, str]]:
    """(ModuleDict, adapter name) of every LoRA layer's dropout: peft keeps them in each layer's `lora_dropout`
    (nn.Dropout, or nn.Identity for p = 0)."""
    return [(drops, name) for module in model.modules()
            if isinstance(drops := getattr(module, "lora_dropout", None), torch.nn.ModuleDict) for name in drops.keys()]


def mask_lora_dropout(model: Any) -> int:
    """Replace peft's LoRA dropout layers (nn.Dropout in each LoRA layer's `lora_dropout`) with MaskDropout of the same
    p; the number replaced. No parameters change, so adapters save and load as before."""
    count = 0
    for drops, name in lora_dropout_slots(model):
        drop = drops[name]
        if type(drop) is torch.nn.Dropout and drop.p > 0:
            drops[name] = MaskDropout(drop.p).train(drop.training)
            count += 1
    return count


@contextlib.contextmanager
def ctrl_c_saves(enabled: bool) -> Any:
    """Ctrl-C during training saves the step reached, as SIGTERM does (transformers' JIT checkpoint), instead of
    losing every step since the last checkpoint to a KeyboardInterrupt. The first Ctrl-C asks for the save (it comes
    ~3 s later, at a step boundary: transformers' grace period) and gives SIGINT its default back, so a second one
    aborts at once. Yields a list that holds signal.SIGINT once Ctrl-C was pressed. Off where SIGINT is ignored (a job
    started in the background, nohup) or JIT checkpointing is (several processes, not the main thread)."""
    pressed: list[int] = []
    if not enabled or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield pressed
        return

    def on_ctrl_c(signum: int, frame: Any) -> None:
        pressed.append(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: saving a checkpoint at the next step boundary (a few seconds); Ctrl-C again aborts without "
              "saving", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGTERM)  # transformers' JIT checkpoint handler takes it from here

    before = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, before)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# --- the parts of a stage -----------------------------------------------------------------------------------------------

class RecordingCollator:
    """Wraps the data collator to write a fingerprint of every example this rank trains on (tests check that two
    processes see disjoint shards)."""

    def __init__(self, inner: Any, path: Path):
        self.inner, self.path = inner, path
        self.seen: list[str] = []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        for ex in examples:
            self.seen.append(hashlib.sha1(json.dumps(list(ex["input_ids"])).encode()).hexdigest()[:16])
        self.path.write_text(json.dumps(self.seen))
        return self.inner(examples)


def _trainer_class() -> type:
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
    from trl import SFTTrainer

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        """Length-grouped order drawn from (seed, epoch) alone. transformers' sampler draws from the global torch RNG,
        which can differ between processes (measured: 2 of 32 examples seen by both ranks under accelerate launch);
        this order is the same on every rank, so accelerate's shards are disjoint, and a resumed run gets it back."""

        seed, epoch = 0, 0

        def __iter__(self):  # noqa: ANN204
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))

    class CatalogSFTTrainer(SFTTrainer):
        """trl's SFTTrainer with a loss per `loss_mode`: trl's fused LM head, the model's own full-logits loss, or
        completion_loss (the output module on labelled positions only; used when peft wraps the output layer, whose
        trainable id-token rows trl's fused head, reading `lm_head.weight`, is not written for)."""

        loss_mode = "fused"  # fused | plain | completion (see completion_loss); build_trainer sets it per stage
        _length_sampler = None

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                sampler.__class__ = EpochSeededLengthGroupedSampler  # same fields; only the order source changes
                sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                self._length_sampler = sampler
            return sampler

        def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
            if self._length_sampler is not None:
                self._length_sampler.epoch = kwargs["epoch"]  # Trainer passes every argument by keyword
            return super()._run_epoch(*args, **kwargs)

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            if self.loss_mode == "completion" and not return_outputs:  # callers that want the logits get the plain path
                loss = completion_loss(model, inputs, num_items_in_batch)
                if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                    loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages the gradients
                return loss
            if self.loss_mode != "fused":
                return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return CatalogSFTTrainer


def completion_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """Causal-LM cross-entropy with the output layer applied only at the positions where a row has a next-token label.

    Catalog rows are mostly prompt (a chat template, a title or a conversation) with a completion of a few tokens, so
    the (batch x length x vocabulary) logits of the model's own loss are mostly thrown away; the output layer is a
    fifth of SmolLM2's forward. This passes transformers' `logits_to_keep` (the positions any row of the batch has a
    label for) to the model's own forward: the call goes through every wrapper (DDP's gradient hooks, peft's
    trainable id-token rows on a tied head, which trl's fused head does not see) and the model's own logit scaling
    or capping. Equal to the model's own loss (tests/finetune/test_completion_loss.py)."""
    targets = inputs["labels"][:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().flatten()  # position t predicts token t + 1
    kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")}
    logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits  # (batch, len(keep), vocabulary)
    kept = targets[:, keep].to(logits.device)
    total = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), kept.flatten(), ignore_index=-100, reduction="sum")
    n = (kept != -100).sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(n, device=total.device).clamp(min=1)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM under any peft wrapper accepts `logits_to_keep` (most transformers 5 causal LMs do)."""
    import inspect

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(type(lm).forward).parameters


def output_layer_wrapped(model: Any) -> bool:
    head = model.get_output_embeddings()
    return type(head).__module__.startswith("peft.")


def stage_dataset(stage: StageConfig, tokenizer: Any, catalog: Catalog, idmap: IdMap, extras: dict[str, Any],
                  cfg: RecipeConfig) -> Any:
    tables, length = {}, {}
    for task, w in stage.tasks.items():
        if w > 0:
            tables[task], length[task] = _fitted_examples(task, stage.train.max_length, tokenizer, catalog, idmap, extras, cfg)
    extras.setdefault("examples_by_task", {})[stage.name] = {task: len(t) for task, t in tables.items()}  # before weighting
    extras.setdefault("length", {})[stage.name] = _check_length(length, stage, cfg)
    ds = weighted_mixture(tables, stage.tasks, seed=cfg.seed)
    if getattr(tokenizer, "chat_template", None):
        from dlsearch.data.prompts import chat_completion

        # Pretrained chat models see prompts in their template, exactly as decoding will render them, and learn the
        # completion the trie constrains to (its leading space dropped where it would merge into the template).
        ds = ds.map(lambda r: {"prompt": apply_chat_template(tokenizer, r["prompt"]) if r["prompt"] else "",
                               "completion": chat_completion(tokenizer, r["completion"]) if r["prompt"] else r["completion"]})
    return ds


def _fitted_examples(task: str, max_length: int, tokenizer: Any, catalog: Catalog, idmap: IdMap, extras: dict[str, Any],
                     cfg: RecipeConfig) -> tuple[Any, dict[str, int]]:
    """A task's examples under the length policy (data.prompts.fit_context_prompt): contexts cut from the left,
    completions never cut; an example that still does not fit (e.g. a title->id row with a huge title) is dropped.
    conversation->item (and ->mention) reserves the longest id code + EOS, as direct search does at inference, so the prompt is
    cut identically in both. Returns (dataset, {kept, cut, dropped})."""
    from dlsearch.data.prompts import CUT, DROPPED, KEPT, LengthBudget
    from dlsearch.finetune.memorization import code_token_budget

    reserve = code_token_budget(tokenizer, idmap) if task in ("conversation->item", "conversation->mention") else None
    budget = LengthBudget(tokenizer, max_length, reserve)
    ds = task_examples(task, catalog, idmap, extras, cfg.data, length=budget)
    counts = budget.counts.get(task, {KEPT: 0, CUT: 0, DROPPED: 0})
    if task not in budget.counts:  # tasks without a context: whole rows that do not fit are dropped, never cut
        lengths = [len(tokenizer(p, add_special_tokens=True)["input_ids"]) + len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1
                   for p, c in zip(ds["prompt"], ds["completion"])]
        fits = [i for i, n in enumerate(lengths) if n <= max_length]
        counts = {KEPT: len(fits), CUT: 0, DROPPED: len(ds) - len(fits)}
        if len(fits) < len(ds):
            ds = ds.select(fits)
    return ds, counts


def _check_length(counts: dict[str, dict[str, int]], stage: StageConfig, cfg: RecipeConfig) -> dict[str, dict[str, int]]:
    """Warn (or, with data.length_errors, refuse) when more than 1 % of a task's examples were cut or dropped."""
    import warnings

    for task, c in counts.items():
        total = sum(c.values())
        bad = c["cut"] + c["dropped"]
        if total and bad / total > 0.01:
            msg = (f"stages.{stage.name}: {task}: {c['cut']} of {total} examples had their context cut from the left and "
                   f"{c['dropped']} were dropped to fit train.max_length={stage.train.max_length} tokens")
            if cfg.data.length_errors:
                raise ValueError(msg + " (data.length_errors is true; raise max_length or set it false)")
            warnings.warn(msg, stacklevel=2)
    return counts


def peft_config(stage: StageConfig, tokenizer: Any, idmap: IdMap) -> Any:
    from peft import LoraConfig

    lc = stage.lora
    trainable = None
    if lc.train_new_tokens:
        # The id tokens were added to the vocabulary; LoRA leaves embeddings frozen, so their rows train directly.
        trainable = sorted(tokenizer.convert_tokens_to_ids(id_tokens(idmap)))
    targets = lc.target_modules if isinstance(lc.target_modules, str) else list(lc.target_modules)
    return LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM", trainable_token_indices=trainable or None,
                      modules_to_save=list(lc.modules_to_save) or None)


def check_target_modules(model: Any, stage: StageConfig) -> None:
    """Every listed LoRA target must name a layer of this model: peft refuses only when none does and does not say
    what the model has. The error names the recipe key, the model's linear layers and the any-architecture value."""
    if isinstance(stage.lora.target_modules, str):
        return
    from transformers.pytorch_utils import Conv1D

    nn = torch.nn  # the layer kinds peft's LoRA wraps (bnb's 4/8-bit layers subclass nn.Linear)
    kinds = (nn.Linear, Conv1D, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
    names = [name for name, m in model.named_modules() if isinstance(m, kinds)]
    # peft's rule for a list: an entry names a module whose path is the entry or ends with "." + entry
    named = lambda path, entry: path == entry or path.endswith("." + entry)  # noqa: E731
    missing = [t for t in stage.lora.target_modules if not any(named(n, t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))})
        raise ConfigError(
            f"stages.{stage.name}.lora.target_modules: {missing} are not layers of this {type(model).__name__} (its linear "
            f"layers: {linear}); list some of those, or set it to all-linear (every linear layer but the output head)")
    embed = next((n for n, m in model.named_modules() if m is model.get_input_embeddings()), None)
    hit = [t for t in stage.lora.target_modules if embed is not None and named(embed, t)]
    if hit and stage.lora.train_new_tokens:  # peft refuses the pair with a TypeError about trainable_token_indices
        raise ConfigError(
            f"stages.{stage.name}.lora.target_modules: {hit} is the input embedding, whose added id-token rows "
            f"lora.train_new_tokens (true) already trains and peft cannot do both; set stages.{stage.name}.lora."
            f"train_new_tokens=false (LoRA on the embedding then updates those rows too) or drop {hit[0]!r}")


def load_stage_model(base_dir: Path, method: str, dtype: torch.dtype) -> Any:
    if method != "qlora":
        return load_base(base_dir, quantized=False, dtype=dtype)
    from peft import prepare_model_for_kbit_training

    # Gradient checkpointing only saves memory; on CPU it costs time, so it is not switched on here.
    return prepare_model_for_kbit_training(load_base(base_dir, quantized=True), use_gradient_checkpointing=False)


def loss_mode(setting: str, model: Any) -> str:
    """fused (trl's tiled LM head), plain (the model's own loss on full logits) or completion (completion_loss).
    auto: fused on CUDA when the output layer is not peft-wrapped (trl's kernel cannot see wrapped rows), else
    completion; plain for a model whose forward takes no `logits_to_keep`."""
    wrapped, keeps = output_layer_wrapped(model), takes_logits_to_keep(model)
    if setting == "completion" and not keeps:
        raise ValueError(f"train.loss completion: {type(model).__name__}.forward takes no logits_to_keep; use plain")
    if setting == "fused" and wrapped:  # trl's fused head would neither see nor train the wrapped id-token rows
        return "completion" if keeps else "plain"
    if setting != "auto":
        return setting
    if on_cuda() and not wrapped:
        return "fused"
    return "completion" if keeps else "plain"


class RecipeCadence(TrainerCallback):
    """Logging, evaluation and checkpoint intervals from this run's settings, also when resuming. transformers restores
    them from the checkpoint's trainer_state.json (warning only), so `--set ...save_steps=50 --resume` kept the old
    cadence and, with save_total_limit rotating, dropped checkpoints the new one would have kept."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        state.compute_steps(args, state.max_steps)


SEGMENTS = "segments.json"  # in every checkpoint dir: the training segments that produced it


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """What trains: the CUDA device's name, else the CPU's model name and its native bf16 units, if any."""
    if on_cuda():
        return torch.cuda.get_device_name()
    info = read_cpuinfo()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "cpu")
    units = cpu_bf16_units(info)
    return f"{name} ({', '.join(units) if units else 'no bf16 units'})"


class TrainingClock(TrainerCallback):
    """Time of every training segment (one process's run from a start or a resume to its end), saved in each
    checkpoint as segments.json, so a resumed stage reports the time of all its steps and where and in which
    precision each step ran. A segment's wall seconds include any time the process was stopped (SIGSTOP) and the
    learning-curve evaluations (both recorded); its CPU seconds (all threads) include neither stopping nor other
    processes. Steps after the last checkpoint of a killed run are lost with it and not counted."""

    def __init__(self, bf16: bool, curve: CurveCallback | None = None):
        self.bf16, self.curve = bf16, curve
        self.previous: list[dict[str, Any]] = []
        self.resumed_from: str | None = None
        self.stopped_early = False  # set at the train end: stopped by SIGTERM before the last step

    def resume(self, checkpoint: str | None) -> None:
        """Called just before Trainer.train: start this segment's clock (loading the checkpoint counts), read the
        segments of the checkpoint this run continues (None: a fresh start) and warn when the precision changes."""
        self._start()
        self.resumed_from = checkpoint
        self.previous = []
        if checkpoint:
            path = Path(checkpoint, SEGMENTS)
            recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
            step = json.loads(Path(checkpoint, "trainer_state.json").read_text(encoding="utf-8")).get("global_step", 0)
            # steps 0..step must all be covered: steps trained before segments.json existed (no file, or a file that
            # starts later) happened, but their time and precision are unknown
            cursor = 0
            for seg in [*recorded, {"first_step": step, "last_step": step, "end": True}]:
                if seg["first_step"] > cursor:
                    self.previous.append({"first_step": cursor, "last_step": seg["first_step"], "unrecorded": True})
                if not seg.get("end"):
                    self.previous.append(seg)
                cursor = max(cursor, seg["last_step"])
        before = {s["bf16"] for s in self.previous if not s.get("unrecorded")}
        if before and before != {self.bf16}:
            was = "bf16 autocast" if True in before else "float32"
            warnings.warn(f"{checkpoint}: its steps ran in {was}; this run continues in "
                          f"{'bf16 autocast' if self.bf16 else 'float32'} (this machine: {device_name()}); set "
                          "train.bf16 explicitly to keep one precision. segments.json records the steps of each", stacklevel=2)

    def _start(self) -> None:
        self.t0, self.cpu0, self.eval0 = time.perf_counter(), time.process_time(), self._eval_seconds()
        self.load0, self.started = load_avg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not hasattr(self, "t0"):  # a Trainer run without resume() first
            self._start()
        self.first_step = state.global_step

    def _eval_seconds(self) -> float:
        return self.curve.eval_seconds if self.curve is not None else 0.0

    def current(self, step: int) -> dict[str, Any]:
        """This process's segment up to now (at `step`)."""
        return {"first_step": self.first_step, "last_step": step, "started": self.started,
                "wall_seconds": round(time.perf_counter() - self.t0, 1),
                "cpu_seconds": round(time.process_time() - self.cpu0, 1),
                "curve_eval_seconds": round(self._eval_seconds() - self.eval0, 1),
                "bf16": self.bf16, "device": device_name(), "threads": torch.get_num_threads(),
                "load_avg_start": self.load0, "load_avg_end": load_avg()}

    def segments(self, step: int) -> list[dict[str, Any]]:
        return [*self.previous, self.current(step)]

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # told to stop before the last step: SIGTERM through transformers' JIT checkpoint (a normal end stops at it)
        self.stopped_early = bool(control.should_training_stop) and state.global_step < state.max_steps

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir, f"checkpoint-{state.global_step}")
            if ckpt.is_dir():
                atomic_write_json(ckpt / SEGMENTS, self.segments(state.global_step))


def segment_totals(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over a stage's segments: training seconds (wall minus learning-curve evaluations), CPU seconds, and the
    precisions and devices its steps ran on. `segments_complete` is False when steps from before the clock existed
    are in the stage (an "unrecorded" segment): the sums then cover only the recorded steps."""
    known = [s for s in segments if not s.get("unrecorded")]
    return {"train_seconds": round(sum(s["wall_seconds"] - s["curve_eval_seconds"] for s in known), 1),
            "train_cpu_seconds": round(sum(s["cpu_seconds"] for s in known), 1),
            "segments_complete": len(known) == len(segments),
            "segments_bf16": sorted({s["bf16"] for s in known}),
            "segments_devices": sorted({s["device"] for s in known})}


def build_trainer(cfg: RecipeConfig, stage: StageConfig, base_dir: Path, stage_dir: Path, catalog: Catalog, idmap: IdMap,
                  extras: dict[str, Any]) -> tuple[Any, Any, CurveCallback | None]:
    """(trainer, tokenizer, learning-curve callback or None) for one stage, ready to train."""
    # Order: tokenizer first (datasets and LoRA token indices depend on it), then model, data, trainer.
    tokenizer = load_tokenizer(base_dir)
    model = load_stage_model(base_dir, stage.method, model_dtype(cfg.model.dtype))
    if stage.method != "full":
        check_target_modules(model, stage)
    train_ds = stage_dataset(stage, tokenizer, catalog, idmap, extras, cfg)
    args = sft_args(stage.train, stage_dir / "checkpoints", seed=cfg.seed)
    curve = None
    if cfg.eval.curve_every > 0 and stage.tasks.get("title->id", 0) > 0:
        sample = sorted(catalog.ids[:: max(1, len(catalog) // cfg.eval.curve_sample)][: cfg.eval.curve_sample],
                        key=catalog.index)
        curve = CurveCallback(tokenizer, catalog, idmap, sample, cfg.eval.curve_every, cfg.eval.batch_size,
                              path=stage_dir / "learning_curve.json")
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                               peft_config=peft_config(stage, tokenizer, idmap) if stage.method != "full" else None,
                               callbacks=[RecipeCadence(), TrainingClock(bool(args.bf16), curve),
                                          *([curve] if curve else [])])
    if stage.method != "full" and stage.lora.dropout_impl == "mask":
        mask_lora_dropout(trainer.model)  # the same dropout, its mask drawn faster on a CPU
    if stage.method == "qlora" and not on_cuda():
        # trl casts QLoRA adapters to bf16 (QLoRA paper); a CPU has no bf16 units, so they train in float32 here.
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype == torch.bfloat16:
                p.data = p.data.float()
    trainer.loss_mode = loss_mode(stage.train.loss, trainer.model)
    if cfg.record_shards:
        stage_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.accelerator.process_index
        trainer.data_collator = RecordingCollator(trainer.data_collator, stage_dir / f"shard_rank{rank}.json")
    return trainer, tokenizer, curve


def run_stage(cfg: RecipeConfig, stage: StageConfig, base_dir: Path, stage_dir: Path, catalog: Catalog, idmap: IdMap,
              extras: dict[str, Any], *, resume: bool) -> dict[str, Any]:
    """Train one stage from the model in base_dir; save the model or adapter, manifest and memorization in stage_dir."""
    return train_stage(cfg, stage, base_dir, stage_dir, catalog, idmap, extras, resume=resume)[0]


def train_stage(cfg: RecipeConfig, stage: StageConfig, base_dir: Path, stage_dir: Path, catalog: Catalog, idmap: IdMap,
                extras: dict[str, Any], *, resume: bool = False) -> tuple[dict[str, Any], Any]:
    """run_stage, also returning the trainer (its in-memory model is what tests compare reloads against)."""
    trainer, tokenizer, curve = build_trainer(cfg, stage, base_dir, stage_dir, catalog, idmap, extras)
    last = last_complete_checkpoint(stage_dir / "checkpoints") if resume else None
    clock = next(c for c in trainer.callback_handler.callbacks if isinstance(c, TrainingClock))
    clock.resume(last)
    if last is not None and trainer.is_world_process_zero():
        done = json.loads(Path(last, "trainer_state.json").read_text(encoding="utf-8")).get("global_step")
        print(f"stage {stage.name}: resuming from {last} (step {done})", flush=True)
    load0, t0 = load_avg(), time.perf_counter()
    # Ctrl-C saves like SIGTERM; not with DataLoader workers, which a terminal's Ctrl-C reaches too and stops
    jit = bool(getattr(trainer.args, "enable_jit_checkpoint", False)) and trainer.args.dataloader_num_workers == 0
    with float32_attention(trainer.model, bool(trainer.args.bf16) and not on_cuda()), ctrl_c_saves(jit) as ctrl_c:
        result = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - t0
    eval_s = curve.eval_seconds if curve else 0.0
    segments = clock.segments(trainer.state.global_step)
    total = trainer.state.max_steps
    if clock.stopped_early:  # stopped by SIGTERM or Ctrl-C (transformers' JIT checkpoint): saved, not finished
        # the JIT save may come before the optimizer step of the step in flight: the checkpoint can be one step behind
        ckpt = last_complete_checkpoint(stage_dir / "checkpoints")
        saved = int(Path(ckpt).name.split("-")[1]) if ckpt else 0
        if trainer.is_world_process_zero() and ckpt:
            atomic_write_json(Path(ckpt) / SEGMENTS, clock.segments(saved))  # the JIT save skips on_save
        signum = ctrl_c[0] if ctrl_c else signal.SIGTERM
        how = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else "SIGTERM"
        raise TrainingInterrupted(f"stage {stage.name}: stopped by {how} at step {saved} of {total} ({ckpt or 'no checkpoint'} "
                                  "is saved); rerun the same command with --resume (a sweep: rerun it) to continue from there",
                                  signum=signum)

    info: dict[str, Any] = {
        "stage": stage.name, "method": stage.method, "steps": trainer.state.global_step,
        "train_loss": result.training_loss, "curve_eval_seconds": round(eval_s, 1),
        # every segment of the stage (a resumed run's earlier processes too): train_seconds, train_cpu_seconds, ...
        **segment_totals(segments), "segments": segments, "this_run_seconds": round(wall - eval_s, 1),
        "resumed_from": last, "world_size": trainer.accelerator.num_processes, "examples": len(trainer.train_dataset),
        "distributed_type": str(trainer.accelerator.distributed_type.value),  # NO / MULTI_CPU / MULTI_GPU / FSDP: what ran
        "load_avg_start": load0, "load_avg_end": load_avg(), "device": "cuda" if on_cuda() else "cpu",
        "bf16": bool(trainer.args.bf16),
        "losses": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "examples_by_task": extras.get("examples_by_task", {}).get(stage.name),  # built from the prepared split
        "length": extras.get("length", {}).get(stage.name),  # per task: kept, cut (context, from the left), dropped
        "length_policy": {"max_length": stage.train.max_length},
        "prepared": extras.get("prepared"),  # fingerprint of the prepared dir (catalog, splits, id map) trained on
        "prepared_dir": os.path.relpath(extras["prepared_dir"], stage_dir) if extras.get("prepared_dir") else None,
    }
    # Every rank enters the weight save: under FSDP the shards are gathered collectively (only rank 0 writes; under
    # DDP the other ranks return at once). Manifest, merge and memorization are rank 0's.
    save_weights(trainer, stage, stage_dir)
    if trainer.is_world_process_zero():
        save_stage(trainer, tokenizer, stage, base_dir, stage_dir, catalog, idmap, cfg, info)
        if curve is not None:
            save_curve(curve.points, stage_dir, title=f"{idmap.scheme} ids, {len(catalog)} items, stage {stage.name}")
    trainer.accelerator.wait_for_everyone()
    return info, trainer


def nonfinite_parameters(model: Any) -> list[str]:
    """Names of the parameters holding an inf or NaN (a diverged run: too high a learning rate, fp16 overflow)."""
    return [n for n, p in model.named_parameters() if not bool(p.detach().isfinite().all())]


def save_weights(trainer: Any, stage: StageConfig, stage_dir: Path) -> None:
    """The trained model (full) or adapter (LoRA / QLoRA, in <stage_dir>/adapter) through Trainer.save_model, which
    every rank must call (FSDP gathers the sharded weights; with FULL_STATE_DICT the result is a plain dir)."""
    bad = nonfinite_parameters(trainer.model)
    if bad:  # a model with non-finite weights is never written as a finished stage
        raise ValueError(f"stage {stage.name!r}: {len(bad)} parameter tensor(s) hold inf/NaN after training "
                         f"(e.g. {bad[0]}); lower stages.{stage.name}.train.lr (now {stage.train.lr}) and rerun; "
                         f"{stage_dir} is not marked complete")
    out = stage_dir if stage.method == "full" else stage_dir / "adapter"
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the manifest records the recipe


def save_stage(trainer: Any, tokenizer: Any, stage: StageConfig, base_dir: Path, stage_dir: Path, catalog: Catalog,
               idmap: IdMap, cfg: RecipeConfig, info: dict[str, Any]) -> None:
    """Rank 0, after save_weights: tokenizer, manifest, the merged export and measured memorization."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    base_man = read_manifest(base_dir)
    if stage.method == "full":
        kind, base_model, extra = "model", base_man.get("base_model"), {}
    else:
        kind, base_model = "adapter", str(base_dir.resolve())
        extra = {"base_model_fingerprint": model_fingerprint(base_dir), "method": stage.method}
    tokenizer.save_pretrained(str(stage_dir))
    from dlsearch.finetune.config import to_dict

    write_manifest(stage_dir, catalog=catalog, idmap=idmap, tokenizer=tokenizer, base_model=base_model,
                   extra={"kind": kind, **extra, "stage": info, "recipe": to_dict(cfg), "complete": False,
                          "prepared": info.get("prepared"), "prepared_dir": info.get("prepared_dir")})
    if kind == "adapter" and stage.merge:
        export_merged(stage_dir, stage_dir / "merged")
    if cfg.eval.memorization:
        model, tok, _ = load_finetuned(stage_dir)  # from the saved files: what a user would load
        r = measure(model, tok, catalog, idmap, batch_size=cfg.eval.batch_size)
        write_memorization(stage_dir, r, catalog=catalog, idmap=idmap, step=info["steps"])
        info["memorization"] = {k: r[k] for k in ("exact_match", "valid_rate", "n_items", "eval_seconds")}
    man = read_manifest(stage_dir)
    man["stage"], man["complete"] = info, True
    atomic_write_json(stage_dir / MANIFEST, man, default=str)  # "complete" must never be half written


def export_merged(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its (full-precision) base and save a plain model dir with the same manifest."""
    model, tok, man = load_finetuned(adapter_dir, merge=True)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for f in ("idmap.json", "catalog.jsonl"):
        shutil.copy(Path(adapter_dir) / f, out / f)
    atomic_write_json(out / MANIFEST, {**man, "kind": "model", "merged_from": str(Path(adapter_dir).resolve())}, default=str)
    return out


# --- the recipe -----------------------------------------------------------------------------------------------------

def active_stages(cfg: RecipeConfig) -> list[StageConfig]:
    return [s for s in cfg.stages if s.enabled]


def stage_dirs(cfg: RecipeConfig) -> list[Path]:
    out, stages = Path(cfg.output_dir), active_stages(cfg)
    return [out if i == len(stages) - 1 else out / "stages" / st.name for i, st in enumerate(stages)]


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint dir cannot be resumed from ("<file>: <error>"), or None when every file in it reads back:
    JSON parses, every safetensors tensor loads, every torch zip (optimizer, scheduler, rng states) passes its CRC
    check. Nothing is unpickled."""
    import zipfile

    for f in sorted(ckpt.rglob("*.json")):
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"{f}: {e}"
    for f in sorted(ckpt.rglob("*.safetensors")):
        problem = safetensors_problem(f, read_tensors=True)
        if problem is not None:
            return problem
    for f in sorted(p for p in ckpt.rglob("*") if p.suffix in (".pt", ".pth", ".bin")):
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{f}: {e}"
        if bad is not None:
            return f"{f}: corrupt member {bad}"
    return None


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that reads back intact. A run killed while saving leaves a dir without
    trainer_state.json (written last): never a candidate. A checkpoint with a corrupt file (disk full, a bad copy)
    is skipped with a warning naming the file, and the next older one is used."""
    if not ckpt_dir.exists():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    skipped: list[str] = []
    for ckpt in sorted(done, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if skipped:
                warnings.warn(f"{'; '.join(skipped)}: unreadable, resuming from {ckpt} instead")
            return str(ckpt)
        skipped.append(problem)
    if skipped:
        warnings.warn(f"{'; '.join(skipped)}: unreadable and no intact checkpoint is left; the stage starts over")
    return None


def prepare_base(cfg: RecipeConfig, catalog: Catalog, idmap: IdMap) -> Path:
    """The model stage 1 starts from: built from scratch (tokenizer trained here) or the pretrained dir with the id
    tokens added. Re-runnable: an existing init dir for the same base, catalog and id scheme is reused; one built
    from another base is refused (its stages would continue on the wrong model)."""
    from dlsearch.finetune.loading import init_pretrained_model

    init = Path(cfg.output_dir) / "init"
    size_name = Path(cfg.model.size).stem if cfg.model.size else None
    base = f"scratch:{size_name}" if size_name else str(Path(cfg.model.pretrained).resolve())  # as the manifests write it
    if (init / MANIFEST).exists():
        man = read_manifest(init)
        if man.get("base_model") != base:  # the stages under output_dir were trained from that init: never mix bases
            raise ValueError(f"{init}: built from {man.get('base_model')}, but the recipe's model is {base} "
                             f"(model.size / model.pretrained); pick another output_dir")
        if man.get("catalog_hash") == catalog.content_hash() and man.get("id_scheme") == idmap.scheme:
            return init
    if cfg.model.size:
        size = load_model_size(cfg.model.size)
        return init_scratch_model(catalog, idmap, size, cfg.model.tokenizer, init, seed=cfg.seed, size_name=size_name)
    return init_pretrained_model(catalog, idmap, cfg.model.pretrained, init)


def run_stages(cfg: RecipeConfig, base: Path, catalog: Catalog, idmap: IdMap, extras: dict[str, Any], *,
               resume: bool) -> list[dict[str, Any]]:
    """The stage loop (one home: the recipe and the quickstart both run it). Each stage trains from the previous
    stage's model (a LoRA stage's merged export, or its base when it is not merged); with resume, a stage whose
    manifest says complete is skipped and the current one continues from its last checkpoint. Returns each stage's
    info (its "stage" key is the stage name)."""
    infos = []
    for stage, sdir in zip(active_stages(cfg), stage_dirs(cfg)):
        if resume and (sdir / MANIFEST).exists() and read_manifest(sdir).get("complete"):
            infos.append(read_manifest(sdir)["stage"])
        else:
            infos.append(run_stage(cfg, stage, base, sdir, catalog, idmap, extras, resume=resume))
        base = sdir if stage.method == "full" else (sdir / "merged" if stage.merge else base)
    return infos


def run_recipe(cfg: RecipeConfig, *, resume: bool = False) -> list[dict[str, Any]]:
    """Run every stage in order; with resume, finished stages are skipped and the current one continues from its
    last checkpoint. Returns per-stage info (steps, losses, timings, memorization)."""
    from accelerate import PartialState

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    state = PartialState(cpu=not on_cuda())
    # Order: data before the model (the tokenizer is trained on the catalog and its id tokens), then stages.
    catalog, idmap, extras = load_source(cfg.data, cfg.output_dir)
    with state.main_process_first():  # one process builds the init dir, the others then reuse it
        base = prepare_base(cfg, catalog, idmap)
    infos = run_stages(cfg, base, catalog, idmap, extras, resume=resume)
    if state.is_main_process:
        Path(cfg.output_dir, "run_summary.json").write_text(json.dumps(infos, indent=2, default=str))
    return infos
