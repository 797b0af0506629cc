"""QLoRA (4-bit nf4 on CPU via bitsandbytes) from a trained base; adapter reload; refusal of wrong base/catalog."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from dlsearch.data.catalog import Catalog, Item
from dlsearch.finetune.config import load_recipe
from dlsearch.finetune.loading import load_finetuned
from dlsearch.finetune.manifest import ManifestError
from dlsearch.finetune.sources import load_source
from dlsearch.finetune.train import active_stages, prepare_base, stage_dataset, train_stage
from tests.finetune.conftest import RECIPE, TINY, rows_loss


def test_qlora_loss_falls_and_adapter_reloads_to_identical_logits(tiny_run: tuple[Path, list[dict]], tmp_path: Path) -> None:
    base = tiny_run[0] / "stages" / "index"
    cfg = load_recipe(RECIPE, [f"output_dir={tmp_path}", *TINY, "model.size=null", f"model.pretrained={base}",
                               "stages.index.enabled=false", "stages.history.method=qlora", "stages.history.merge=false",
                               "stages.history.tasks={title->id: 1.0}", "stages.history.train.max_steps=15",
                               "stages.history.train.lr=1.0e-2", "stages.history.train.logging_steps=3", "eval.memorization=false", "stages.history.lora.r=8", "eval.curve_every=0"])
    catalog, idmap, extras = load_source(cfg.data)
    init = prepare_base(cfg, catalog, idmap)
    (stage,) = active_stages(cfg)
    info, trainer = train_stage(cfg, stage, init, tmp_path, catalog, idmap, extras)
    assert any("Linear4bit" in type(m).__name__ for m in trainer.model.modules()), "base was not quantized"
    # the adapter lowers the quantized base's loss on the stage's own rows (adapter off vs on, one deterministic
    # batch). The logged first/last loss cannot tell: at this test's former lr 3e-2 it "fell" 0.87-0.92 at seeds 0-4
    # except seed 3 (1.07) while the loss on these rows went *up* x 1.06-1.13; at lr 1e-2 x 0.972-0.980 (seeds 0-4).
    rows = stage_dataset(stage, trainer.processing_class, catalog, idmap, extras, cfg)
    trained = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    with trained.disable_adapter():
        before = rows_loss(trained, rows, trainer.processing_class)
    after = rows_loss(trained, rows, trainer.processing_class)
    assert after < 0.99 * before, (before, after)

    batch = trainer.processing_class(["### Task: Give the catalog id of this item.\nTitle: Toy Story (1995)\n### Answer:"],
                                     return_tensors="pt", add_special_tokens=False)
    # the trained model itself, without accelerate's mixed-precision wrapper: on a CPU with bf16 units the trainer ran
    # it under bf16 autocast, and its wrapped forward still would; the reloaded adapter runs in float32
    trained = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    with torch.no_grad():
        want = trained(**batch).logits
        model, _, man = load_finetuned(tmp_path, catalog=catalog)
        got = model(**batch).logits
    assert man["method"] == "qlora" and man["kind"] == "adapter"
    assert torch.equal(want, got), (want - got).abs().max()

    # A run trained from another working directory names its base relative to that cwd in adapter_config.json;
    # loading must use the manifest's base, with no peft guess ("Could not find a config file") and the same logits.
    conf = tmp_path / "adapter" / "adapter_config.json"
    conf.write_text(json.dumps({**json.loads(conf.read_text()), "base_model_name_or_path": "runs/elsewhere/init"}))
    with warnings.catch_warnings(record=True) as seen, torch.no_grad():
        warnings.simplefilter("always")
        again = load_finetuned(tmp_path, catalog=catalog)[0](**batch).logits
    assert not [w for w in seen if "config file" in str(w.message)], [str(w.message) for w in seen]
    assert torch.equal(want, again)


def test_adapter_on_wrong_base_is_refused(tiny_run: tuple[Path, list[dict]]) -> None:
    out = tiny_run[0]
    model, _, _ = load_finetuned(out)  # its own base: fine
    with pytest.raises(ManifestError, match="trained on base model .* fingerprint"):
        load_finetuned(out, base_model_dir=out / "init")  # same architecture, untrained weights


def test_model_on_wrong_catalog_is_refused(tiny_run: tuple[Path, list[dict]]) -> None:
    other = Catalog([Item(id="1", title="Some Other Movie (2001)")])
    with pytest.raises(ManifestError, match="trained for catalog"):
        load_finetuned(tiny_run[0], catalog=other)


def test_output_dir_built_from_another_base_is_refused(tiny_run: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """Regression: prepare_base reused an output_dir's init whenever catalog and id scheme matched, so a rerun with
    another model.pretrained (or model.size) silently trained, and resumed, on the old base."""
    out = tiny_run[0]
    same = load_recipe(RECIPE, [f"output_dir={out}", *TINY])
    catalog, idmap, _ = load_source(same.data)
    assert prepare_base(same, catalog, idmap) == out / "init"  # the same base: reused
    other = tmp_path / "other_base"
    other.mkdir()
    for overrides in (["model.size=null", f"model.pretrained={other}"], ["model.size=configs/models/llama-2m.yaml"]):
        cfg = load_recipe(RECIPE, [f"output_dir={out}", *TINY, *overrides])
        with pytest.raises(ValueError, match="built from scratch:llama-tiny, but the recipe's model is .*pick another output_dir"):
            prepare_base(cfg, catalog, idmap)
