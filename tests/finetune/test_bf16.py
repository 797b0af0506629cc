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


def test_sdpa_float32_is_sdpa_in_float32_and_returns_the_callers_dtype() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import dlsearch.finetune.train  # noqa: F401  (registers sdpa_float32)

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: a real mask reaches the attention function
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation("sdpa_float32")
        same = model(input_ids=ids, attention_mask=mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(same, ref)  # float32 callers: exactly transformers' sdpa
    assert mixed.dtype == low.dtype and torch.allclose(mixed.float(), ref, atol=0.1)
    assert (mixed.float() - ref).abs().max() <= (low.float() - ref).abs().max() * 1.5


def test_bf16_lora_stage_on_cpu_runs_attention_in_float32_and_restores_sdpa(tiny_run, tmp_path: Path, monkeypatch) -> None:
    """Under bf16 autocast on a CPU the stage trains with sdpa_float32 (bf16 flash-attention backward was 4x slower
    than float32's there); a float32 stage never calls it, and the trained model names sdpa again afterwards."""
    import torch
    from transformers import AttentionInterface

    from dlsearch.finetune import train
    from dlsearch.finetune.config import load_recipe
    from dlsearch.finetune.sources import load_source
    from tests.finetune.conftest import RECIPE, TINY

    calls: list[bool] = []  # was autocast on at the call (training steps) or off (the curve's float32 decoding)

    def counting(module, query, *args, **kwargs):
        calls.append(torch.is_autocast_enabled("cpu"))
        return train.sdpa_float32(module, query, *args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa_float32", counting)
    base = tiny_run[0] / "stages" / "index"
    for bf16 in (False, True):
        calls.clear()
        cfg = load_recipe(RECIPE, [f"output_dir={tmp_path / str(bf16)}", *TINY, "model.size=null", f"model.pretrained={base}",
                                   "stages.index.enabled=false", "stages.history.merge=false",
                                   f"stages.history.train.bf16={str(bf16).lower()}", "stages.history.tasks={title->id: 1.0}",
                                   "stages.history.train.max_steps=4", "eval.memorization=false", "eval.curve_every=2"])
        catalog, idmap, extras = load_source(cfg.data)
        init = train.prepare_base(cfg, catalog, idmap)
        (stage,) = train.active_stages(cfg)
        info, trainer = train.train_stage(cfg, stage, init, tmp_path / str(bf16), catalog, idmap, extras)
        assert info["bf16"] is bf16 and info["steps"] == 4
        assert trainer.model.get_base_model().config._attn_implementation == "sdpa"
        # 2 layers x 4 steps of bf16-autocast forward; the curve's float32 decoding between steps passes through too
        assert (calls.count(True) >= 8) if bf16 else not calls, (bf16, len(calls))
