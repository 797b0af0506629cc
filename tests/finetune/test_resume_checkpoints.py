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


def test_resumed_stage_reports_every_segments_time_and_precision(tmp_path: Path, capsys) -> None:
    """A stage stopped and resumed reported only the last process's time (train_seconds), and a resume on a machine
    that picked another precision (bf16 auto) mixed fp32 and bf16 steps with one `bf16` flag in the manifest: the
    6,300-item sweep point was resumed across sessions. Each checkpoint now carries segments.json; the stage info sums
    all segments, names each one's precision and device, and a precision change is warned about."""
    from dlsearch.app.sweep import training_time
    from dlsearch.finetune.config import load_recipe
    from dlsearch.finetune.sources import load_source
    from dlsearch.finetune.train import SEGMENTS, active_stages, prepare_base, train_stage
    from tests.finetune.conftest import RECIPE, TINY

    def recipe(max_steps: int, bf16: bool):
        return load_recipe(RECIPE, [f"output_dir={tmp_path}", *TINY, "stages.history.enabled=false",
                                    "eval.memorization=false", "eval.curve_every=0",
                                    f"stages.index.train.max_steps={max_steps}", f"stages.index.train.bf16={bf16}",
                                    "stages.index.train.save_steps=5", "stages.index.train.save_total_limit=10"])

    cfg = recipe(10, False)
    catalog, idmap, extras = load_source(cfg.data)
    init = prepare_base(cfg, catalog, idmap)
    stage_dir = tmp_path / "stage"
    first, _ = train_stage(cfg, active_stages(cfg)[0], init, stage_dir, catalog, idmap, extras)
    assert [(s["first_step"], s["last_step"], s["bf16"]) for s in first["segments"]] == [(0, 10, False)]
    ckpts = stage_dir / "checkpoints"
    assert [s["last_step"] for s in json.loads((ckpts / "checkpoint-5" / SEGMENTS).read_text())] == [5]

    cfg = recipe(20, True)
    with pytest.warns(UserWarning, match=r"checkpoint-10: its steps ran in float32; this run continues in bf16"):
        info, _ = train_stage(cfg, active_stages(cfg)[0], init, stage_dir, catalog, idmap, extras, resume=True)
    assert "stage index: resuming from" in capsys.readouterr().out
    segs = info["segments"]
    assert [(s["first_step"], s["last_step"], s["bf16"]) for s in segs] == [(0, 10, False), (10, 20, True)]
    assert segs[0] == json.loads((ckpts / "checkpoint-10" / SEGMENTS).read_text())[0]  # read back, not re-measured
    assert info["segments_bf16"] == [False, True] and info["bf16"] is True
    assert info["train_seconds"] == pytest.approx(sum(s["wall_seconds"] - s["curve_eval_seconds"] for s in segs), abs=0.2)
    assert info["train_seconds"] > info["this_run_seconds"] > 0 and info["train_cpu_seconds"] > 0
    # the last checkpoint is written at step 20, a moment before the stage's clock stops: its last segment's clock
    # may read 0.1 s less (CI failed on exactly that under load), everything else is the same
    saved = json.loads((ckpts / "checkpoint-20" / SEGMENTS).read_text())
    clocks = ("wall_seconds", "cpu_seconds", "load_avg_end")
    assert [{k: v for k, v in s.items() if k not in clocks} for s in saved] == [{k: v for k, v in s.items() if k not in clocks} for s in segs]
    assert saved[0] == segs[0]
    assert saved[1]["wall_seconds"] == pytest.approx(segs[1]["wall_seconds"], abs=0.5)
    assert saved[1]["cpu_seconds"] == pytest.approx(segs[1]["cpu_seconds"], abs=0.5)

    # the sweep's table takes the recipe's clock over all segments
    (stage_dir / "run_summary.json").write_text(json.dumps([info]))
    t = training_time(stage_dir)
    assert t["train_seconds"] == info["train_seconds"] and t["train_segments"] == 2 and t["train_bf16"] == [False, True]
    assert training_time(tmp_path / "elsewhere") == {"model_dir": str(tmp_path / "elsewhere")}


def test_checkpoint_without_segments_still_resumes(tmp_path: Path, recwarn) -> None:
    """A checkpoint written before segments.json existed (the trainer never reads the file): its steps become one
    "unrecorded" segment, no precision warning, and the sums say they are incomplete (the 6,300-item sweep point was
    trained to step 900 before the clock), so the sweep does not present them as the point's training time."""
    from dlsearch.app.sweep import training_time
    from dlsearch.finetune.train import TrainingClock, segment_totals

    old = _checkpoint(tmp_path / "checkpoints", 5)
    (old / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    clock = TrainingClock(bf16=False)
    clock.resume(str(old))
    clock.first_step = 5
    segs = clock.segments(10)
    assert segs[0] == {"first_step": 0, "last_step": 5, "unrecorded": True} and (segs[1]["first_step"], segs[1]["last_step"]) == (5, 10)
    assert not [w for w in recwarn if "its steps ran" in str(w.message)]
    totals = segment_totals(segs)
    assert totals["segments_complete"] is False and totals["segments_bf16"] == [False]
    (tmp_path / "run_summary.json").write_text(json.dumps([{**totals, "segments": segs}]))
    assert "train_seconds" not in training_time(tmp_path)  # the table marks the stage's wall time instead

    # a file that starts later (written by a process resumed from such a checkpoint) keeps the gap unrecorded
    later = _checkpoint(tmp_path / "checkpoints", 20)
    (later / "trainer_state.json").write_text(json.dumps({"global_step": 20}))
    (later / "segments.json").write_text(json.dumps([segs[1] | {"last_step": 20}]))
    clock = TrainingClock(bf16=False)
    clock.resume(str(later))
    assert [(s["first_step"], s["last_step"], bool(s.get("unrecorded"))) for s in clock.previous] == [(0, 5, True), (5, 20, False)]
