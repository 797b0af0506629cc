"""Fixtures for decoding tests (helpers live in decoding_fixtures.py so test modules can import them)."""

from __future__ import annotations

import pytest

from decoding_fixtures import make_model, make_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_model(len(tokenizer), eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id, bos=tokenizer.bos_token_id)
