"""Direct search (decoding.direct.DirectSearch) seen from conversations, for the router.

    strategies.direct.factory: retrieval.direct:direct_from_config      (configs/recommend.yaml)
    strategies.direct.options: {index: runs/m/trie, beams: 20}

The prompt is decoding's `conversation_prompt` (the training template, mentions rendered as titles); items the
conversation excludes or already mentions are masked inside beam search, not filtered afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation


class DirectConversationSearch:
    """search(conversations, k) -> (scores, rows) with decoding's constrained beam search: the searcher under the
    router's "direct" strategy (retrieval.strategy.SearcherStrategy passes it the conversations as they are)."""

    masks_exclusions = True  # the router asks for k, not k + overfetch (beam width grows with k)

    def __init__(self, search: Any, catalog: Catalog, *, exclude_mentioned: bool = True, max_messages: int | None = None):
        self.search_engine, self.catalog, self.exclude_mentioned = search, catalog, exclude_mentioned
        self.max_messages = max_messages  # the context window the model was trained on (recipe data.max_messages)

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        from dlsearch.decoding.generate import conversation_prompt

        if any(not isinstance(c, Conversation) for c in convs):
            raise TypeError("direct search in the router takes Conversations (the prompt is built here)")
        prompts = [conversation_prompt(c, self.catalog, self.search_engine.tokenizer, max_messages=self.max_messages)
                   for c in convs]
        exclude = [c.exclusions(mentioned=self.exclude_mentioned) for c in convs]
        return self.search_engine.search(prompts, k, exclude=exclude)


DTYPES = ("float32", "bfloat16")


def trained_max_messages(model_dir: str | Path) -> int | None:
    """The conversation window (data.max_messages) of the recipe the model was fine-tuned with; None when the
    manifest records no recipe (a model from `dlsearch model init`, or trained on whole conversations)."""
    from dlsearch.finetune.manifest import read_manifest

    recipe = read_manifest(model_dir).get("recipe") or {}
    return (recipe.get("data") or {}).get("max_messages")


def direct_from_config(*, catalog: Catalog, model_dir: str | None, index: str, beams: int = 20, batch_size: int = 8,
                       adapter: str | None = None, length_penalty: float = 0.0, dtype: str = "float32") -> DirectConversationSearch:
    """Load the fine-tuned model and its trie index (checked against this catalog's hash and the tokenizer).

    Args:
        length_penalty: beam scores are sum(log p) / length**length_penalty; 0 = summed log-probabilities (short
            titles win ties), 1 = mean log-probability per token.
        dtype: float32, or bfloat16 (about 3x faster on CPUs with AMX-BF16; beam scores are still float32).
    The prompt keeps the last data.max_messages messages when the model's recipe trained on that window."""
    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.generate import load_model
    from dlsearch.decoding.index import TrieIndex

    if not model_dir:
        raise ValueError("direct search needs 'model_dir' (the fine-tuned model) in the recommend config")
    if not Path(index).exists():
        raise FileNotFoundError(f"{index}: no trie index; build it with `dlsearch index build --kind trie`")
    if dtype not in DTYPES:
        raise ValueError(f"direct search dtype must be one of {DTYPES}, got {dtype!r}")
    import torch

    model, tokenizer = load_model(model_dir, adapter, dtype=getattr(torch, dtype))
    trie = TrieIndex.load(index, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    search = DirectSearch(model, tokenizer, trie, catalog, beams=beams, batch_size=batch_size, length_penalty=length_penalty)
    return DirectConversationSearch(search, catalog, max_messages=trained_max_messages(adapter or model_dir))
