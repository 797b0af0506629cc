"""MaskDropout (LoRA dropout with a cheaper CPU mask): the distribution of torch's dropout, seeded by torch, the
same gradient, and the one a LoRA stage trains with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlsearch.finetune.config import load_recipe
from dlsearch.finetune.sources import load_source
from dlsearch.finetune.train import MaskDropout, active_stages, mask_lora_dropout, prepare_base, train_stage
from tests.finetune.conftest import RECIPE, TINY


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_every_element_is_dropped_with_probability_p_and_the_rest_scaled(p: float) -> None:
    torch.manual_seed(0)
    n = 400_003  # not a multiple of the 4 elements each random int64 serves
    x = torch.rand(n) + 0.5
    y = MaskDropout(p).train()(x)
    dropped = y == 0
    kept = ~dropped
    assert torch.allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    # each of the four 16-bit lanes of an int64 on its own (a lane with a constant bit drops at another rate)
    sigma = (p * (1 - p) / (n / 4)) ** 0.5
    for lane in range(4):
        rate = dropped[lane::4].float().mean().item()
        assert abs(rate - p) < 5 * sigma, (lane, rate)
    # neighbours independent: P(both dropped) = p^2
    both = (dropped[:-1] & dropped[1:]).float().mean().item()
    assert abs(both - p * p) < 5 * (p * p / n) ** 0.5 + 1e-4, both


def test_the_mask_follows_torch_manual_seed_and_eval_mode_is_the_identity() -> None:
    x = torch.randn(3, 50, 64)
    drop = MaskDropout(0.1).train()
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    b = drop(x)
    torch.manual_seed(8)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(MaskDropout(0.0).train()(x), x)


def test_gradient_is_the_forward_mask_times_the_scale() -> None:
    torch.manual_seed(0)
    x = (torch.rand(4, 33, 17) + 0.5).requires_grad_()
    y = MaskDropout(0.2).train()(x)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, g * (y != 0) / 0.8)


@pytest.mark.parametrize("impl", ["mask", "torch"])
def test_a_lora_stage_with_dropout_trains_with_the_chosen_dropout(impl: str, tiny_run: tuple[Path, list[dict]],
                                                                  tmp_path: Path) -> None:
    base = tiny_run[0] / "stages" / "index"
    cfg = load_recipe(RECIPE, [f"output_dir={tmp_path}", *TINY, "model.size=null", f"model.pretrained={base}",
                               "stages.index.enabled=false", "stages.history.method=lora", "stages.history.lora.r=4",
                               "stages.history.lora.dropout=0.1", f"stages.history.lora.dropout_impl={impl}",
                               "stages.history.tasks={title->id: 1.0}",
                               "stages.history.train.max_steps=2", "eval.memorization=false", "eval.curve_every=0"])
    catalog, idmap, extras = load_source(cfg.data)
    init = prepare_base(cfg, catalog, idmap)
    (stage,) = active_stages(cfg)
    info, trainer = train_stage(cfg, stage, init, tmp_path, catalog, idmap, extras)
    assert info["steps"] == 2
    masks = [m for m in trainer.model.modules() if isinstance(m, MaskDropout)]
    torch_drops = [m for m in trainer.model.modules() if type(m) is torch.nn.Dropout and m.p > 0]
    if impl == "torch":
        assert torch_drops and not masks
        return
    assert masks and all(d.p == pytest.approx(0.1) for d in masks) and not torch_drops
    assert mask_lora_dropout(trainer.model) == 0  # nothing left to replace


def test_dropout_impl_torch_keeps_torchs_dropout_and_a_wrong_value_names_the_key(tmp_path: Path) -> None:
    from dlsearch.finetune.config import ConfigError

    common = [f"output_dir={tmp_path}", *TINY, "stages.history.lora.dropout=0.1"]
    cfg = load_recipe(RECIPE, [*common, "stages.history.lora.dropout_impl=torch"])
    assert next(s for s in cfg.stages if s.name == "history").lora.dropout_impl == "torch"
    with pytest.raises(ConfigError, match=r"stages\.history\.lora\.dropout_impl: 'fast' is not one of mask, torch"):
        load_recipe(RECIPE, [*common, "stages.history.lora.dropout_impl=fast"])


def test_under_cpu_autocast_it_works_in_the_autocast_dtype_and_matches_float32() -> None:
    torch.manual_seed(0)
    x = (torch.rand(6, 40, 32) + 0.5).requires_grad_()
    drop = MaskDropout(0.1).train()
    torch.manual_seed(1)
    want = drop(x)  # float32
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = drop(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got == 0, want == 0)  # the same mask from the same generator state
    assert torch.allclose(got.float(), want.to(torch.bfloat16).float(), rtol=8e-3, atol=0)
    got.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.allclose(x.grad, (want != 0) / 0.9, rtol=8e-3)
