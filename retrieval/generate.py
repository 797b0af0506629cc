"""Queries for the fallbacks from the fine-tuned model: `conversation->concepts` and `conversation->query`.

    gen = TaskGenerator(model, tokenizer, catalog)        # model/tokenizer from dlsearch.finetune.loading.load_model
    gen.concepts(conversation) -> ["sci-fi", "robots"]    # free generation, split on ", "
    gen.query(conversation)    -> "funny space adventure"

Greedy decoding of the shared prompt template (data.prompts), batched with left padding. Constraining concepts to
the catalog vocabulary is either the decoding trie (decoding/) or `retrieval.concept.snap_to_vocabulary` after the
fact.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.data.prompts import CONCEPT_SEP, encode_prompts, ensure_pad_token


class TaskGenerator:
    def __init__(self, model: Any, tokenizer: Any, catalog: Catalog | None = None, *, max_new_tokens: int = 32, batch_size: int = 16,
                 max_messages: int | None = None, max_length: int | None = None):
        self.model, self.tokenizer, self.catalog = model, tokenizer, catalog
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        # the window the model was trained with: the last data.max_messages messages, cut from the left to max_length
        # (decoding.direct.trained_window reads both from a model dir's manifest)
        self.max_messages, self.max_length = max_messages, max_length
        ensure_pad_token(tokenizer)

    def prompt(self, task: str, conv: Conversation) -> str:
        """The task's prompt for a conversation, rendered as training rendered it."""
        from dlsearch.decoding.direct import conversation_prompt

        return conversation_prompt(conv, self.catalog, self.tokenizer, max_messages=self.max_messages,
                                   max_length=self.max_length, reserve=self.max_new_tokens, task=task)

    @torch.no_grad()
    def generate(self, task: str, convs: Sequence[Conversation]) -> list[str]:
        """Greedy completion (first line, stripped) of `task` for each conversation."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out: list[str] = []
        for s in range(0, len(convs), self.batch_size):
            prompts = [self.prompt(task, c) for c in convs[s : s + self.batch_size]]
            enc = encode_prompts(self.tokenizer, prompts).to(device)
            gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]  # [b, <= max_new_tokens]
            out += [t.split("\n")[0].strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out

    def concepts(self, conv: Conversation) -> list[str]:
        return self.concepts_many([conv])[0]

    def concepts_many(self, convs: Sequence[Conversation]) -> list[list[str]]:
        return [[c.strip() for c in t.split(CONCEPT_SEP.strip()) if c.strip()] for t in self.generate("conversation->concepts", convs)]

    def query(self, conv: Conversation) -> str:
        return self.generate("conversation->query", [conv])[0]
