"""Config paths resolve relative to the config file, then the working directory, then the shipped configs: a
recipe named from another directory no longer fails with 'configs/models/llama-5m.yaml: no such model size config'."""

from __future__ import annotations

from pathlib import Path

from dlsearch.finetune.config import load_model_size, load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_recipes_and_model_presets_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(REPO / "configs" / "finetune-redial-cpu.yaml")  # names configs/models/llama-5m.yaml (repo-root relative)
    assert Path(cfg.model.size).is_file() and load_model_size(cfg.model.size).hidden_size > 0
    tiny = load_recipe("configs/finetune-tiny.yaml")  # not in the working directory: the shipped copy
    assert Path(tiny.model.size).is_file() and Path(tiny.model.size).name == "llama-tiny.yaml"
    assert load_recipe("configs/quickstart-recipe.yaml").stages[0].name == "index"
