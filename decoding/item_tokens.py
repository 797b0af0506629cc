"""Token ids of item codes exactly as the model emits them after the prompt.

A tokenizer encodes " Toy Story" differently at the start of a string, after a newline, or after "Answer:"
(leading-space tokens, SentencePiece's dummy prefix, merges across the boundary). We therefore encode
context + completion and keep only the tokens after the context's own tokens; if the context's tokens are not a
prefix of the joint encoding (a merge across the boundary), the item cannot be constrained reliably and we refuse.
"""

from __future__ import annotations

from typing import Any, Sequence

from dlsearch.data.prompts import ANSWER_PREFIX, ITEM_START, answer_context, apply_chat_template, chat_completion, make_completion  # noqa: F401 (chat_completion re-exported)


class ItemTokenizationError(ValueError):
    """An item code whose tokens depend on the text before it (a merge across the prompt boundary)."""


def completion_token_ids(tokenizer: Any, completions: Sequence[str], *, context: str = ANSWER_PREFIX,
                         batch_size: int = 4096, drop_merged_space: bool = False) -> list[list[int]]:
    """Tokens of each completion as they follow `context` in one encoding.

    Args:
        tokenizer: transformers tokenizer.
        completions: the completion strings (e.g. make_completion(code), with its leading space).
        context: the text the completion follows (the prompt's last line is enough: tokenizers are local).
    Returns:
        one list of token ids per completion (no special tokens).
    Raises:
        ItemTokenizationError: the context's tokens change when a completion follows it.
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    out: list[list[int]] = []
    for i in range(0, len(completions), batch_size):
        chunk = list(completions[i:i + batch_size])
        enc = tokenizer([context + c for c in chunk], add_special_tokens=False)["input_ids"]
        for c, ids in zip(chunk, enc):
            if ids[: len(ctx)] != ctx and drop_merged_space and c.startswith(" "):
                c = c[1:]  # chat_completion's rule, applied only to the completions that merge
                ids = tokenizer(context + c, add_special_tokens=False)["input_ids"]
            if ids[: len(ctx)] != ctx:
                raise ItemTokenizationError(
                    f"completion {c!r} merges with the text before it ({context!r}); its tokens would differ at "
                    "inference. Use a code format that starts with a separator, or another tokenizer.")
            if len(ids) == len(ctx):
                raise ItemTokenizationError(f"completion {c!r} encodes to no tokens")
            out.append(ids[len(ctx):])
    return out


def item_token_ids(tokenizer: Any, codes: Sequence[str], *, mode: str = "whole") -> list[list[int]]:
    """Token ids of every item code as the model writes it: mode "whole" after the answer prefix (and the chat
    template's generation prompt) with the leading space of make_completion; mode "span" right after the ITEM_START
    marker inside free text."""
    if mode == "whole":
        chat = bool(getattr(tokenizer, "chat_template", None))
        return completion_token_ids(tokenizer, [make_completion(c) for c in codes], context=answer_context(tokenizer),
                                    drop_merged_space=chat)
    if mode == "span":
        marker_ids = tokenizer(ITEM_START, add_special_tokens=False)["input_ids"]
        if len(marker_ids) != 1:
            raise ItemTokenizationError(
                f"{ITEM_START!r} is {len(marker_ids)} tokens in this tokenizer; spans need it as one added token "
                f"(tokenizer.add_special_tokens({{'additional_special_tokens': ['{ITEM_START}', '</item>']}}))")
        seqs = completion_token_ids(tokenizer, list(codes), context=f"I suggest {ITEM_START}")
        # a code holding the opening marker would open a span inside a span: the reply could not be parsed
        bad = next((c for c, s in zip(codes, seqs) if marker_ids[0] in s), None)
        if bad is not None:
            raise ItemTokenizationError(f"item code {bad!r} contains the span marker {ITEM_START!r}; span mode cannot "
                                        "tell it from a new span. Use another id source or remove the marker")
        return seqs
    raise ValueError(f"mode must be 'whole' or 'span', got {mode!r}")
