"""Fine-tuning configuration: small dataclasses loaded from YAML, validated at load, overridable per key.

    cfg = load_recipe("configs/finetune-movielens-cpu.yaml", overrides=["stages.index.train.lr=3e-3"])

Every YAML key must name a dataclass field: an unknown or misspelled key is a `ConfigError` that names the file,
the dotted key, and the closest valid name; a value of the wrong type is refused with the expected type.
Overrides are `dotted.key=value` strings (value parsed as YAML); list elements are addressed by index or, for
stages, by their `name`.
"""

from __future__ import annotations

import difflib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from dlsearch.data.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict  # noqa: F401  (re-exported)


class TrainingInterrupted(RuntimeError):
    """A stage stopped before its last step (SIGTERM or Ctrl-C; finetune.train): its checkpoint is saved, the stage is
    not complete. Here, not in train.py, so that the CLI can catch it without importing torch. exit_code: 128 + the
    signal's number, as if the signal had ended the process (143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


# --- schema ------------------------------------------------------------------------------------------------------

@dataclass
class ModelSize:
    """A small Llama-family decoder built from scratch (configs/models/*.yaml)."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0


@dataclass
class TokenizerConfig:
    vocab_size: int = 4000  # BPE merges learned from catalog + example text (before special/id tokens)
    min_frequency: int = 2
    split_digits: bool = True  # numeric ids tokenize digit by digit: every id has one predictable tokenization
    template_tokens: bool = True  # prompt-template headers as whole tokens: ~40 % shorter examples, same text


@dataclass
class ModelConfig:
    size: str | None = None  # path to configs/models/<preset>.yaml: build a model from scratch
    pretrained: str | None = None  # local Hugging Face causal-LM dir: add id tokens and fine-tune (LoRA)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on CUDA with bf16 support


@dataclass
class DataConfig:
    dataset: str = "movielens"  # movielens | redial | a prepared dir (catalog.jsonl + idmap.json)
    max_items: int | None = None  # first N catalog items (None: all)
    id_scheme: str = "semantic"  # atomic | sequential | random | title | semantic | collaborative
    id_seed: int = 0
    id_params: dict[str, Any] = field(default_factory=dict)  # scheme parameters, e.g. semantic {levels, codebook_size, cache_dir}
    histories: str | None = None  # redial only: "movielens" adds MovieLens ratings moved onto the linked ReDial items
    #   (prepare --histories movielens): the history->next_item task then trains over the ReDial catalog
    max_history: int = 10  # history->next_item: items of context before the target
    max_examples_per_task: int | None = None  # cap for the large conversation/history tasks
    length_errors: bool = False  # true: refuse a stage where > 1 % of a task's examples are cut or dropped to fit
    #   train.max_length (false: a warning; the counts are always in the model manifest's stage.length)
    max_messages: int | None = None  # conversation tasks: keep only the last N messages of the context (None: all).
    #   (contexts longer than train.max_length are cut from the left anyway, the same way at inference)


@dataclass
class LoraSettings:
    r: int = 16  # rank: more capacity per layer, more parameters and optimizer state
    alpha: int = 32  # scale = alpha / r
    dropout: float = 0.0  # regularizes small data; 0 is best for memorization
    dropout_impl: str = "mask"  # mask: finetune.train.MaskDropout (its CPU mask is cheaper); torch: torch's own dropout,
    #   what runs trained with before 2026-12-04 (the same distribution, another random stream)
    # module names (Llama's by default) or "all-linear": peft's every linear layer but the output head, any architecture
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_new_tokens: bool = True  # added id/marker token rows stay trainable (peft trainable_token_indices)
    modules_to_save: list[str] = field(default_factory=list)  # whole modules trained and saved with the adapter


@dataclass
class TrainSettings:
    lr: float = 1e-3
    scheduler: str = "cosine"  # transformers lr_scheduler_type: cosine | linear | constant | constant_with_warmup ...
    warmup_ratio: float = 0.02
    weight_decay: float = 0.0
    batch_size: int = 32  # per process
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    max_length: int = 256
    save_steps: int = 500  # checkpoint every N steps (what --resume continues from)
    save_total_limit: int = 2
    logging_steps: int = 50
    bf16: bool | None = None  # null = auto: bf16 autocast on CUDA with bf16 and on CPUs with bf16 units (amx_bf16 /
    #                           avx512_bf16: ~3x faster with AMX, 1.4-1.5x on an AVX512-BF16 EPYC, SmolLM2 LoRA);
    #                           float32 on other CPUs (emulated bf16 is slower)
    gradient_checkpointing: bool = False  # saves activation memory for ~30 % more compute; small models don't need it
    max_grad_norm: float = 1.0
    loss: str = "auto"  # auto | completion | fused | plain. completion: the output layer only on completion tokens
    #                     (train.completion_loss); fused: trl's tiled LM head (GPU); plain: the model's own loss on
    #                     full logits. auto: fused on CUDA unless peft wraps the output layer, completion otherwise
    dataloader_workers: int = 0
    sampling: str = "group_by_length"  # group_by_length: batches of similar length, less padding (measured 32 %
    #                                    padding at random); random: plain shuffle


@dataclass
class StageConfig:
    name: str = "sft"
    enabled: bool = True  # false: skip this stage (e.g. --set stages.history.enabled=false for the base stage only)
    method: str = "full"  # full | lora | qlora
    tasks: dict[str, float] = field(default_factory=lambda: {"title->id": 1.0})  # task -> mixture weight
    train: TrainSettings = field(default_factory=TrainSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    merge: bool = False  # LoRA stages: also export the merged plain model dir to <out>/merged


@dataclass
class EvalConfig:
    memorization: bool = True  # greedy unconstrained title->id on all trained items after training
    curve_every: int = 0  # evaluate a fixed sample every N steps (0: no learning curve)
    curve_sample: int = 200
    batch_size: int = 256


@dataclass
class RecipeConfig:
    output_dir: str = "runs/sft"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    eval: EvalConfig = field(default_factory=EvalConfig)
    record_shards: bool = False  # write per-rank example fingerprints (tests of the data split across processes)


METHODS = ("full", "lora", "qlora")
# catalog_text: language-modeling rows of item text, for the base stage;
# query->id: DSI's retrieval task, (query, item) pairs read from <data.dataset>/queries.jsonl (a prepared dir)
EXTRA_TASKS = ("catalog_text", "query->id")


# --- loading -----------------------------------------------------------------------------------------------------

def load_recipe(path: str | Path | None, overrides: Sequence[str] = (), *, base: dict[str, Any] | None = None) -> RecipeConfig:
    """Load a recipe YAML (or `base` dict), apply `key=value` overrides, validate, and return a RecipeConfig.

    Raises:
        ConfigError: unknown/misspelled key (with a suggestion), wrong type, or an invalid value.
    """
    tree: dict[str, Any] = {}
    label = "<config>"
    if path is not None:
        from dlsearch.data.config import resolve_config_path

        path = resolve_config_path(path)
        label = str(path)
        tree = load_yaml(path)
    if base is not None:
        tree = {**base, **tree} if path is None else tree
    if not isinstance(tree, dict):
        raise ConfigError(f"{label}: the top level must be a mapping")
    apply_overrides(tree, overrides, defaults=RecipeConfig())
    try:
        cfg = from_dict(RecipeConfig, tree)
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    if path is not None:
        _resolve_paths(cfg, Path(path))
    return cfg


BUNDLED_DATASETS = ("movielens", "redial")  # data.dataset names that are not paths (finetune/sources.py)


def _resolve_paths(cfg: RecipeConfig, config: Path) -> None:
    # Inputs the recipe names (model-size preset, prepared dir, pretrained model dir): relative to the recipe file,
    # else the working directory, else the shipped configs ('configs/models/x.yaml' also resolves after a
    # non-editable install, from any directory). output_dir stays relative to the working directory.
    from dlsearch.data.config import resolve_input_path

    cfg.model.size = resolve_input_path(cfg.model.size, config)
    cfg.model.pretrained = resolve_input_path(cfg.model.pretrained, config)
    if cfg.data.dataset not in BUNDLED_DATASETS:
        cfg.data.dataset = resolve_input_path(cfg.data.dataset, config)


def validate(cfg: RecipeConfig) -> None:
    from dlsearch.data.prompts import TASKS

    if (cfg.model.size is None) == (cfg.model.pretrained is None):
        raise ConfigError("model: set exactly one of 'size' (build from scratch) or 'pretrained' (local model dir)")
    if not any(s.enabled for s in cfg.stages):
        raise ConfigError("stages: at least one enabled stage is needed")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stages: names must be unique, got {names}")
    active = [s for s in cfg.stages if s.enabled]
    for i, st in enumerate(active):
        where = f"stages.{st.name}"
        if st.method not in METHODS:
            raise ConfigError(f"{where}.method: {st.method!r} is not one of {list(METHODS)}")
        for task, w in st.tasks.items():
            if task not in TASKS and task not in EXTRA_TASKS:
                close = difflib.get_close_matches(task, list(TASKS) + list(EXTRA_TASKS), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"{where}.tasks: unknown task {task!r}{hint} (known: {list(TASKS) + list(EXTRA_TASKS)})")
            if w < 0:
                raise ConfigError(f"{where}.tasks.{task}: weight must be >= 0, got {w}")
        if not any(w > 0 for w in st.tasks.values()):
            raise ConfigError(f"{where}.tasks: at least one task needs a positive weight")
        if isinstance(st.lora.target_modules, str) and st.lora.target_modules != "all-linear":
            raise ConfigError(f"{where}.lora.target_modules: a list of module names or 'all-linear', got {st.lora.target_modules!r}")
        if st.method != "full" and not st.merge and i < len(active) - 1:
            raise ConfigError(f"{where}.merge: a {st.method} stage followed by another stage needs merge: true")
        t = st.train
        for key, ok, need in (
            ("lr", t.lr > 0, "> 0"), ("batch_size", t.batch_size >= 1, ">= 1"), ("grad_accum", t.grad_accum >= 1, ">= 1"),
            ("epochs", t.epochs > 0 or t.max_steps > 0, "> 0 (or max_steps > 0)"),
            ("max_length", t.max_length >= 2, ">= 2 (a prompt token and a completion token)"),
            ("warmup_ratio", 0 <= t.warmup_ratio <= 1, "in [0, 1]"), ("weight_decay", t.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", t.max_grad_norm > 0, "> 0"), ("save_steps", t.save_steps >= 1, ">= 1"),
            ("save_total_limit", t.save_total_limit >= 1, ">= 1"), ("logging_steps", t.logging_steps >= 1, ">= 1"),
            ("dataloader_workers", t.dataloader_workers >= 0, ">= 0"),
        ):
            if not ok:
                raise ConfigError(f"{where}.train.{key}: must be {need}, got {getattr(t, key)!r}")
        if st.train.loss not in ("auto", "completion", "fused", "plain"):
            raise ConfigError(f"{where}.train.loss: {st.train.loss!r} is not one of auto, completion, fused, plain")
        if st.lora.dropout_impl not in ("mask", "torch"):
            raise ConfigError(f"{where}.lora.dropout_impl: {st.lora.dropout_impl!r} is not one of mask, torch")
        if st.train.sampling not in ("random", "group_by_length"):
            raise ConfigError(f"{where}.train.sampling: {st.train.sampling!r} is not one of random, group_by_length")
        if st.method == "qlora" and cfg.model.pretrained is None and i == 0:
            raise ConfigError(f"{where}.method: qlora quantizes a trained base; a model built from scratch needs a full stage first")
    if cfg.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype: {cfg.model.dtype!r} is not one of auto, float32, bfloat16, float16")


def load_model_size(path: str | Path) -> ModelSize:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such model size config (see configs/models/)")
    tree = load_yaml(path)
    try:
        return from_dict(ModelSize, tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

