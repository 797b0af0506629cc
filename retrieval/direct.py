"""Direct search (decoding.direct.DirectSearch) seen from conversations, for the router.

    DirectConversationSearch(DirectSearch(model, tokenizer, trie, catalog, beams=20), catalog)
    # from a config: strategies.direct.factory: direct  (dlsearch.app.strategies:direct_from_config)

The prompt is decoding's `conversation_prompt` (the training template, mentions rendered as titles); items the
conversation excludes or already mentions are masked inside beam search, not filtered afterwards.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation


class DirectConversationSearch:
    """search(conversations, k) -> (scores, rows) with decoding's constrained beam search: the searcher under the
    router's "direct" strategy (retrieval.strategy.SearcherStrategy passes it the conversations as they are)."""

    masks_exclusions = True  # the router asks for k, not k + overfetch (beam width grows with k)
    masks_allow = True  # conv.meta["allow"] is a mask in the trie too: k allowed items whenever k exist

    def __init__(self, search: Any, catalog: Catalog, *, exclude_mentioned: bool = True, max_messages: int | None = None):
        self.search_engine, self.catalog, self.exclude_mentioned = search, catalog, exclude_mentioned
        self.max_messages = max_messages  # the context window the model was trained on (recipe data.max_messages)

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        from dlsearch.decoding.generate import conversation_prompt
        from dlsearch.retrieval.strategy import allow_list

        if any(not isinstance(c, Conversation) for c in convs):
            raise TypeError("direct search in the router takes Conversations (the prompt is built here)")
        prompts = [conversation_prompt(c, self.catalog, self.search_engine.tokenizer, max_messages=self.max_messages)
                   for c in convs]
        exclude = [c.exclusions(mentioned=self.exclude_mentioned) for c in convs]
        allow = [allow_list(c) for c in convs]
        if all(a is None for a in allow):
            return self.search_engine.search(prompts, k, exclude=exclude)
        return self.search_engine.search(prompts, k, exclude=exclude, allow=allow)
