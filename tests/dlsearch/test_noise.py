"""Commands print no third-party noise (issue 13): bm25s DEBUG lines in `recommend`, bitsandbytes' CPU-kernel
warning on every command."""

from __future__ import annotations

import logging


def test_bm25_build_and_search_log_nothing_below_warning(caplog, tmp_path) -> None:
    from dlsearch.data.catalog import Catalog, Item
    from dlsearch.retrieval.bm25 import build_bm25

    catalog = Catalog([Item(id=str(i), title=t) for i, t in enumerate(["The Matrix", "Alien", "Heat", "Up"])])
    with caplog.at_level(logging.NOTSET):  # the app's root handler passes everything a logger lets through
        logging.getLogger().setLevel(logging.WARNING)  # what `dlsearch recommend` sets
        index = build_bm25(catalog)
        index.save(tmp_path / "bm25")
        index.search(["matrix"], 2)
    noisy = [r for r in caplog.records if r.name.startswith("bm25s") and r.levelno < logging.WARNING]
    assert noisy == []


def test_cli_hides_the_bitsandbytes_cpu_kernel_warning() -> None:
    """peft imports bitsandbytes whenever it is installed; on CPUs with AVX512-BF16 bitsandbytes then warns that an
    optional 4-bit kernel (used by QLoRA only) is missing. The CLI silences that one logger, nothing else."""
    from dlsearch.cli import quiet_third_party_loggers

    quiet_third_party_loggers()
    assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
    assert logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.ERROR)
    assert logging.getLogger("dlsearch.retrieval.router").isEnabledFor(logging.WARNING)


def test_cli_hides_the_is_gradient_checkpointing_future_warning_and_nothing_else() -> None:
    """trl 1.x reads transformers 5's deprecated `model.is_gradient_checkpointing` when it sets up training, so every
    `dlsearch finetune` / quickstart printed a FutureWarning twice. The CLI ignores that one message only."""
    import warnings

    from transformers import LlamaConfig, LlamaForCausalLM

    from dlsearch.cli import quiet_third_party_loggers

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        model.is_gradient_checkpointing
    assert any("is_gradient_checkpointing" in str(w.message) for w in before)  # what trl triggers without the CLI
    with warnings.catch_warnings(record=True) as after:  # the filter the CLI adds is undone on leaving this block
        warnings.simplefilter("always")
        quiet_third_party_loggers()
        model.is_gradient_checkpointing
        warnings.warn("some other deprecation", FutureWarning)
    messages = [str(w.message) for w in after]
    assert not any("is_gradient_checkpointing" in m for m in messages)
    assert "some other deprecation" in messages
