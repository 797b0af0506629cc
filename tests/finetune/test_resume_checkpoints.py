"""--resume falls back to the last intact checkpoint when the newest is corrupt, naming the bad file (issue 13: a
corrupt file in the newest checkpoint blocked resume with `Expecting ',' delimiter`, SafetensorError or
`PytorchStreamReader failed`, none naming the file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dlsearch.finetune.train import last_complete_checkpoint


def _checkpoint(root: Path, step: int) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(d / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64)}}}, d / "optimizer.pt")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return d


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("corrupt, name", [
    (lambda d: (d / "trainer_state.json").write_text('{"global_step": 20 "log_history": []}'), "trainer_state.json"),
    (lambda d: _truncate(d / "model.safetensors"), "model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 8), "model.safetensors"),
    (lambda d: _truncate(d / "optimizer.pt"), "optimizer.pt"),
])
def test_newest_corrupt_checkpoint_falls_back_naming_the_file(tmp_path: Path, corrupt, name) -> None:
    ckpts = tmp_path / "checkpoints"
    _checkpoint(ckpts, 10)
    newest = _checkpoint(ckpts, 20)
    assert last_complete_checkpoint(ckpts) == str(newest)
    corrupt(newest)
    with pytest.warns(UserWarning, match=rf"checkpoint-20/{name}.*checkpoint-10"):
        assert last_complete_checkpoint(ckpts) == str(ckpts / "checkpoint-10")


def test_no_intact_checkpoint_starts_over_with_a_warning(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    only = _checkpoint(ckpts, 10)
    _truncate(only / "model.safetensors")
    with pytest.warns(UserWarning, match="checkpoint-10/model.safetensors"):
        assert last_complete_checkpoint(ckpts) is None


def test_resume_uses_this_runs_checkpoint_cadence(tmp_path: Path) -> None:
    """Resumed with a new save_steps, the run checkpoints at the new interval (transformers restored the old one from
    trainer_state.json: a second ReDial epoch resumed with save_steps 50 saved every 25, and save_total_limit rotated
    out the checkpoints the curve asked for)."""
    from dlsearch.finetune.config import load_recipe
    from dlsearch.finetune.sources import load_source
    from dlsearch.finetune.train import active_stages, prepare_base, train_stage
    from tests.finetune.conftest import RECIPE, TINY

    def recipe(max_steps: int, save_steps: int):
        return load_recipe(RECIPE, [f"output_dir={tmp_path}", *TINY, "stages.history.enabled=false",
                                    "eval.memorization=false", "eval.curve_every=0",
                                    f"stages.index.train.max_steps={max_steps}",
                                    f"stages.index.train.save_steps={save_steps}",
                                    "stages.index.train.save_total_limit=10"])

    cfg = recipe(10, 5)
    catalog, idmap, extras = load_source(cfg.data)
    init = prepare_base(cfg, catalog, idmap)
    stage_dir = tmp_path / "stage"
    train_stage(cfg, active_stages(cfg)[0], init, stage_dir, catalog, idmap, extras)
    cfg = recipe(20, 4)
    info, _ = train_stage(cfg, active_stages(cfg)[0], init, stage_dir, catalog, idmap, extras, resume=True)
    assert info["resumed_from"].endswith("checkpoint-10")
    steps = sorted(int(d.name.split("-")[1]) for d in (stage_dir / "checkpoints").glob("checkpoint-*"))
    assert steps == [5, 10, 12, 16, 20], steps
