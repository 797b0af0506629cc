"""Items inside free text: the model writes text, opens a span with ITEM_START, names one catalog item under the
trie constraint, closes it with ITEM_END, and may do so several times per reply.

    replies = generate_with_items(model, tokenizer, span_index, prompts, max_new_tokens=64)
    replies[0].items    # [SpanItem(item_id, score, ...)], in order
    replies[0].texts    # the free text before, between and after the items (len(items) + 1 pieces)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import LogitsProcessorList

from dlsearch.data.prompts import ITEM_END, ITEM_START, encode_prompts
from dlsearch.decoding.constraint import TrieConstraint, check_max_new_tokens
from dlsearch.decoding.index import TrieIndex


@dataclass(frozen=True)
class SpanItem:
    item_id: str
    score: float  # sum of the constrained log-probs of the span's tokens (closing marker included)
    token_start: int  # position of the first item token in the generated tokens
    token_end: int  # position of the closing marker


@dataclass
class SpanReply:
    items: list[SpanItem] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # len(items) + 1 pieces of free text around the items
    incomplete: bool = False  # generation stopped inside an open span (that partial item is not returned)

    def render(self, name: Any = None) -> str:
        """The reply with each item written by name(item_id) (default: the id) between the markers."""
        name = name or (lambda i: i)
        parts = [self.texts[0]]
        for it, t in zip(self.items, self.texts[1:]):
            parts += [f"{ITEM_START}{name(it.item_id)}{ITEM_END}", t]
        return "".join(parts)


def marker_ids(tokenizer: Any) -> tuple[int, int]:
    ids = [tokenizer.convert_tokens_to_ids(m) for m in (ITEM_START, ITEM_END)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks {ITEM_START!r}/{ITEM_END!r} as tokens; add them as special tokens")
    return int(ids[0]), int(ids[1])


def parse_spans(tokens: Sequence[int], index: TrieIndex, tokenizer: Any, *, start_id: int, end_id: int,
                logprobs: Sequence[float] | None = None, stop_ids: Sequence[int] = (), opened: bool = False) -> SpanReply:
    """Split generated tokens into free text and items. Tokens from the first stop id (EOS) on are ignored; pass
    only ids that end a reply: a pad token the model writes inside its text is text.

    opened: the prompt ended with ITEM_START, so the tokens begin inside a span."""
    toks = list(tokens)
    if opened:  # parse as if the marker were the first generated token; positions shift back below
        toks = [start_id] + toks
        if logprobs is not None:
            logprobs = [0.0] + list(logprobs)
    for j, t in enumerate(toks):
        if t in stop_ids:
            toks = toks[:j]
            break
    reply = SpanReply()
    text_start, j = 0, 0
    while j < len(toks):
        if toks[j] != start_id:
            j += 1
            continue
        close = next((m for m in range(j + 1, len(toks)) if toks[m] == end_id), None)
        reply_text = tokenizer.decode(toks[text_start:j], skip_special_tokens=False)
        if close is None:
            reply.incomplete = True
            toks = toks[:j]
            break
        item_id = index.ids_of_codes([toks[j + 1:close]])[0] if close > j + 1 else None  # live items only
        if item_id is None:  # cannot happen under the constraint; kept as text if it does (unconstrained output)
            j = close + 1
            continue
        score = float(sum(logprobs[j + 1:close + 1])) if logprobs is not None else 0.0
        reply.texts.append(reply_text)
        shift = 1 if opened else 0
        reply.items.append(SpanItem(item_id, score, j + 1 - shift, close - shift))
        text_start = j = close + 1
    reply.texts.append(tokenizer.decode(toks[text_start:], skip_special_tokens=False))
    return reply


@torch.no_grad()
def generate_with_items(model: Any, tokenizer: Any, index: TrieIndex, prompts: Sequence[str], *,
                        max_new_tokens: int = 64, deny: Sequence[Sequence[str] | None] | None = None,
                        logits_processor: Sequence[Any] = (), **generate_kwargs: Any) -> list[SpanReply]:
    """Free-text generation with constrained item spans (greedy or sampling; one reply per prompt).

    logits_processor: extra processors run before the constraint (the constraint always has the last word).
    A prompt that ends with ITEM_START opens a span: the reply starts with an item.

    Raises:
        ValueError: not a span-mode index, markers missing, max_new_tokens below the longest code + 1."""
    if index.mode != "span":
        raise ValueError("generate_with_items needs a span-mode index (dlsearch index build --kind trie --mode span)")
    start_id, end_id = marker_ids(tokenizer)
    if end_id != index.end_token_id:
        raise ValueError(f"index closes spans with token {index.end_token_id}, the tokenizer's {ITEM_END!r} is {end_id}")
    check_max_new_tokens(index, max_new_tokens)
    enc = encode_prompts(tokenizer, prompts)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    proc = TrieConstraint(index, eos_token_id=eos, item_start_id=start_id, deny=deny)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([*logits_processor, proc]),
                         pad_token_id=pad, eos_token_id=eos, return_dict_in_generate=True, output_scores=True,
                         **generate_kwargs)
    width = enc["input_ids"].shape[1]
    trans = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).cpu().numpy()
    opened = (enc["input_ids"][:, -1] == start_id).tolist()  # left padding: the last column ends every prompt
    replies = []
    for row, lp, op in zip(out.sequences[:, width:].tolist(), trans, opened):
        # only EOS ends a reply (after it generate fills pad); a pad the model writes inside its text is text
        replies.append(parse_spans(row, index, tokenizer, start_id=start_id, end_id=end_id, logprobs=list(lp),
                                   stop_ids=(eos,), opened=op))
    return replies
