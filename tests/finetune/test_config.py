"""Recipe configs: every shipped YAML loads; misspelled or mistyped fields are refused by name; overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsearch.finetune.config import ConfigError, load_model_size, load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("finetune-*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load_and_start_with_launch_command(path: Path) -> None:
    cfg = load_recipe(path)
    assert cfg.stages
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Launch:") and "--config" in first


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "models").glob("*.yaml")), ids=lambda p: p.name)
def test_model_presets_load(path: Path) -> None:
    size = load_model_size(path)
    assert size.hidden_size % size.num_attention_heads == 0


def test_misspelled_field_is_refused_with_suggestion(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("model: {size: configs/models/llama-tiny.yaml}\nstages:\n  - name: a\n    train: {lerning_rate: 1.0e-3}\n")
    with pytest.raises(ConfigError, match=r"unknown field 'stages\[0\]\.train\.lerning_rate'") as e:
        load_recipe(p)
    assert str(p) in str(e.value)
    p.write_text("model: {size: configs/models/llama-tiny.yaml}\noutput_dri: x\n")
    with pytest.raises(ConfigError, match="did you mean 'output_dir'"):
        load_recipe(p)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("model: {size: configs/models/llama-tiny.yaml}\nstages: [{name: a, train: {batch_size: many}}]\n")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.batch_size: expected an integer, got str 'many'"):
        load_recipe(p)


def test_unknown_task_and_method_are_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean 'title->id'"):
        load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml", ["stages.index.tasks={title-id: 1.0}"])
    with pytest.raises(ConfigError, match="method: 'lorra'"):
        load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml", ["stages.0.method=lorra"])


def test_overrides_by_index_and_by_stage_name() -> None:
    cfg = load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml",
                      ["stages.index.train.lr=0.5", "stages.1.lora.r=4", "data.id_scheme=random", "eval.curve_every=0"])
    assert cfg.stages[0].train.lr == 0.5 and cfg.stages[1].lora.r == 4
    assert cfg.data.id_scheme == "random" and cfg.eval.curve_every == 0
    with pytest.raises(ConfigError, match="unknown field 'data.id_schem'"):
        load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml", ["data.id_schem=random"])
    with pytest.raises(ConfigError, match="no list element 'nope'"):
        load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml", ["stages.nope.train.lr=1"])


@pytest.mark.parametrize("bf16_units", [False, True])
def test_hardware_defaults_on_cpu(bf16_units: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """trl defaults bf16 and gradient checkpointing on; on a CPU without bf16 units both must be off (6-8x slower);
    with them (amx_bf16 / avx512_bf16) bf16 autocast is on. Both branches, whatever CPU runs the test."""
    from dlsearch.finetune import train

    monkeypatch.setattr(train, "cpu_has_bf16", lambda cpuinfo=None: bf16_units)
    monkeypatch.setattr(train, "on_cuda", lambda: False)
    cfg = load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml")
    args = train.sft_args(cfg.stages[0].train, Path("/tmp/x"), seed=0)
    assert args.use_cpu and args.bf16 is bf16_units and args.gradient_checkpointing is False
    assert args.completion_only_loss is True and args.activation_checkpointing is False


@pytest.mark.parametrize("override, key", [
    ("stages.0.train.lr=.inf", "lr"),  # issue 13: trained all-non-finite weights and marked them complete
    ("stages.0.train.lr=.nan", "lr"),
    ("stages.0.train.epochs=-1", "epochs"),  # issue 13: 0 steps, marked complete
    ("stages.0.train.max_length=0", "max_length"),  # issue 13: IndexError traceback
    ("stages.0.train.warmup_ratio=1.5", "warmup_ratio"),
    ("stages.0.train.max_grad_norm=.inf", "max_grad_norm"),
    ("stages.0.train.save_steps=0", "save_steps"),
])
def test_bad_numbers_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"stages[.\[][^ ]*train\.{key}"):
        load_recipe(REPO / "configs" / "finetune-movielens-cpu.yaml", [override])
