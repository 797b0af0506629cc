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

    def __init__(self, search: Any, catalog: Catalog, *, exclude_mentioned: bool = True):
        self.search_engine, self.catalog, self.exclude_mentioned = search, catalog, exclude_mentioned

    @property
    def max_messages(self) -> int | None:
        """The context window the model was trained on (recipe data.max_messages), as the search engine renders it."""
        return self.search_engine.max_messages

    def _prompt(self, conv: Conversation) -> str:
        return self.search_engine.prompt(conv)  # DirectSearch.prompt: the training window and length policy

    def query_key(self, conv: Conversation) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
        """What the beam search reads of a conversation: its prompt, the items it masks and the allow list
        (retrieval.strategy RankingMemo: two conversations with one key get one ranking)."""
        from dlsearch.retrieval.strategy import allow_list

        allow = allow_list(conv)
        return (self._prompt(conv), tuple(sorted(set(conv.exclusions(mentioned=self.exclude_mentioned)))),
                None if allow is None else tuple(sorted(set(allow))))

    def search(self, convs: Sequence[Conversation], k: int) -> tuple[np.ndarray, np.ndarray]:
        from dlsearch.retrieval.strategy import allow_list

        if any(not isinstance(c, Conversation) for c in convs):
            raise TypeError("direct search in the router takes Conversations (the prompt is built here)")
        prompts = [self._prompt(c) for c in convs]
        exclude = [c.exclusions(mentioned=self.exclude_mentioned) for c in convs]
        allow = [allow_list(c) for c in convs]
        if all(a is None for a in allow):
            return self.search_engine.search(prompts, k, exclude=exclude)
        return self.search_engine.search(prompts, k, exclude=exclude, allow=allow)
