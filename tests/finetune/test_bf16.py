"""bf16 autocast on CPU: detected from the CPU's flags, overridable per recipe, and it trains like float32 (losses
within 2 % after 20 steps of the production recipe on a tiny run, the same seed and data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsearch.finetune.config import TrainSettings
from dlsearch.finetune.train import cpu_has_bf16, use_bf16
from tests.finetune.conftest import run_finetune  # noqa: E402

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC_ZEN2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
STEPS = 20


def test_cpu_bf16_units_are_detected_from_cpuinfo_flags() -> None:
    assert cpu_has_bf16(SAPPHIRE_RAPIDS) and not cpu_has_bf16(EPYC_ZEN2) and not cpu_has_bf16("")
    assert cpu_has_bf16("flags : avx512f avx512_bf16\n")
    assert use_bf16(TrainSettings(bf16=False)) is False and use_bf16(TrainSettings(bf16=True)) is True


def test_bf16_and_fp32_losses_agree_within_2_percent_after_20_steps(tmp_path: Path) -> None:
    common = ["stages.history.enabled=false", f"stages.index.train.max_steps={STEPS}", "stages.index.train.logging_steps=5",
              "eval.memorization=false", "eval.curve_every=0", "stages.index.train.save_steps=1000"]
    loss = {}
    for bf16 in (False, True):
        info = run_finetune(tmp_path / str(bf16), *common, f"stages.index.train.bf16={str(bf16).lower()}", timeout=600)[0]
        assert info["bf16"] is bf16 and info["steps"] == STEPS
        loss[bf16] = {p["step"]: p["loss"] for p in info["losses"]}[STEPS]
    assert loss[False] < 5.5  # it trained (starts near ln(vocab) ~ 6)
    assert abs(loss[True] - loss[False]) / loss[False] < 0.02, loss
