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
