"""One `--set a.b.c=value` syntax for every verb (data.config.apply_overrides), validated by the one validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsearch.app.sweep import SweepConfig
from dlsearch.data.config import ConfigError
from dlsearch.evaluation.config import load_config
from dlsearch.retrieval.build import load_dual_config

REPO = Path(__file__).resolve().parents[2]


def test_sweep_accepts_nested_step_options() -> None:
    """issue 13: `sweep --set step_options.num_beams=4` was refused (the key was taken as one flat name)."""
    cfg = load_config(REPO / "configs" / "sweep-tiny.yaml", SweepConfig,
                      ["step_options.num_beams=4", "step_options.dual.epochs=2", "seed=3"])
    assert cfg.step_options["num_beams"] == 4 and cfg.step_options["dual"]["epochs"] == 2 and cfg.seed == 3
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        load_config(REPO / "configs" / "sweep-tiny.yaml", SweepConfig, ["sed=3"])


def test_dual_build_uses_the_same_syntax_and_validator() -> None:
    cfg = load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["epochs=2", "lr=1e-3"])
    assert cfg.epochs == 2 and cfg.lr == 1e-3
    with pytest.raises(ConfigError, match=r"dual_encoder.yaml: unknown field 'epoch'; did you mean 'epochs'"):
        load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["epoch=2"])
    with pytest.raises(ConfigError, match=r"lr: expected a finite number"):
        load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["lr=.inf"])


def test_every_config_verb_has_set() -> None:
    from dlsearch.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    build = next(a for a in sub["index"]._actions if a.__class__.__name__ == "_SubParsersAction").choices["build"]
    for p in (sub["finetune"], sub["evaluate"], sub["sweep"], sub["recommend"], sub["quickstart"], build):
        assert any("--set" in a.option_strings for a in p._actions), p.prog
