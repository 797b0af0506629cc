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


def test_recipe_inputs_resolve_relative_to_the_recipe_not_the_working_directory(tmp_path, monkeypatch):
    """data.dataset and model.pretrained named in a recipe are read next to the recipe (they were read from the working
    directory: a recipe kept with its project failed from anywhere else); output_dir stays in the working directory."""
    project = tmp_path / "project"
    (project / "runs" / "prep").mkdir(parents=True)
    (project / "runs" / "base").mkdir()
    (project / "recipes").mkdir()
    recipe = (REPO / "configs" / "finetune-tiny.yaml").read_text()
    (project / "recipes" / "tiny.yaml").write_text(recipe.replace("dataset: runs/mydata", "dataset: ../runs/prep"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_recipe(project / "recipes" / "tiny.yaml", ["output_dir=out"])
    assert Path(cfg.data.dataset).resolve() == (project / "runs" / "prep").resolve()
    assert cfg.output_dir == "out"  # where it writes: the working directory
    assert Path(cfg.model.size).name == "llama-tiny.yaml" and Path(cfg.model.size).is_file()
    lora = load_recipe(project / "recipes" / "tiny.yaml", ["model.size=null", "model.pretrained=../runs/base"])
    assert Path(lora.model.pretrained).resolve() == (project / "runs" / "base").resolve()
    # a value found only from the working directory (a --set given there) still resolves there
    (elsewhere / "mine").mkdir()
    assert Path(load_recipe(project / "recipes" / "tiny.yaml", ["data.dataset=mine"]).data.dataset).resolve() == (elsewhere / "mine").resolve()
    assert load_recipe(project / "recipes" / "tiny.yaml", ["data.dataset=redial"]).data.dataset == "redial"  # a bundled name
