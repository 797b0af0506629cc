"""Direct search: beam search constrained to the catalog, in the shared search shape (scores, catalog rows).

    search = DirectSearch(model, tokenizer, index, catalog, beams=20)
    scores, rows = search.search(prompts, k=10)       # float32 [n, k], int64 [n, k]; padded with -inf / -1
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.data.prompts import apply_chat_template, encode_prompts
from dlsearch.data.prompts import conversation_prompt as render_prompt
from dlsearch.decoding.beam import constrained_beam_search
from dlsearch.decoding.constraint import TrieConstraint, check_max_new_tokens, longest_code
from dlsearch.decoding.id_table import IdTable
from dlsearch.decoding.index import TrieIndex

DECODERS = ("prefill_once", "generate")
PLACEHOLDER_SCORE = -1.0e8  # beam search's empty slots score -1e9; a real hypothesis scores far above this


TASK = "conversation->item"


def conversation_prompt(conv: Conversation, catalog: Catalog, tokenizer: Any | None = None, *,
                        max_messages: int | None = None, max_length: int | None = None, reserve: int = 0,
                        task: str = TASK) -> str:
    """The prompt of a conversation task (conversation->item by default; ->query, ->concepts) with mentions rendered
    as titles: data.prompts.conversation_prompt, the function training examples are rendered with; max_messages
    keeps the last N messages, as the recipe's data.max_messages did in training (None: all). With max_length (and a
    tokenizer), the context is cut from the left to leave `reserve` tokens for the answer: the length policy training
    applied (fit_context_prompt)."""
    if max_length is not None and tokenizer is not None:
        from dlsearch.data.prompts import conversation_parts, fit_context_prompt, prompt_for_context

        parts = conversation_parts(conv, catalog, max_messages=max_messages)
        prompt, _ = fit_context_prompt(task, parts, tokenizer, max_length - reserve)
        prompt = prompt if prompt is not None else prompt_for_context(task, "")
        return apply_chat_template(tokenizer, prompt)
    prompt = render_prompt(conv, catalog, task, max_messages=max_messages)
    return apply_chat_template(tokenizer, prompt) if tokenizer is not None else prompt


def trained_window(model_dir: str | Path | None) -> tuple[int | None, int | None]:
    """(max_messages, max_length) the model in model_dir was fine-tuned with, from its manifest: the recipe's
    data.max_messages (the last N messages of a conversation) and the stage's length_policy.max_length (contexts cut
    from the left to fit). None for what it does not record (a base, `model init`, whole conversations)."""
    path = Path(str(model_dir)) / "manifest.json" if model_dir else None
    if path is None or not path.is_file():
        return None, None
    man = json.loads(path.read_text(encoding="utf-8"))
    messages = ((man.get("recipe") or {}).get("data") or {}).get("max_messages")
    length = ((man.get("stage") or {}).get("length_policy") or {}).get("max_length")
    return (None if messages is None else int(messages)), (int(length) if length else None)


def trained_max_length(model: Any, model_dir: str | Path | None = None) -> int | None:
    """The max_length the model was fine-tuned with: from model_dir's manifest, else from the dir its weights were
    loaded from (for an adapter that is its base, which records none: pass the adapter's dir), else the model's
    position limit."""
    for d in (model_dir, getattr(model, "name_or_path", None)):
        length = trained_window(d)[1]
        if length:
            return length
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def trained_max_messages(model: Any, model_dir: str | Path | None = None) -> int | None:
    """The recipe's data.max_messages: from model_dir's manifest when it has one, else from the dir the weights were
    loaded from (a merged fine-tuned dir loaded as it is); None (whole conversations) when neither records it."""
    for d in (model_dir, getattr(model, "name_or_path", None)):
        if d and (Path(str(d)) / "manifest.json").is_file():
            return trained_window(d)[0]
    return None



@dataclass
class SearchStats:
    """Counts over the returned beams: a valid item is a complete catalog item with a real score."""

    returned: int = 0
    valid: int = 0
    duplicates: int = 0
    placeholders: int = 0
    per_query_valid: list[int] = field(default_factory=list)

    def add(self, other: "SearchStats") -> None:
        self.returned += other.returned
        self.valid += other.valid
        self.duplicates += other.duplicates
        self.placeholders += other.placeholders
        self.per_query_valid += other.per_query_valid

    def as_dict(self) -> dict[str, float]:
        real = max(self.returned - self.placeholders, 1)
        # "returned" counted beams x conversations under a name that reads as items per conversation
        return {"beam_hypotheses": self.returned, "valid": self.valid, "duplicates": self.duplicates,
                "placeholders": self.placeholders, "valid_item_rate": self.valid / real,
                "duplicate_rate": self.duplicates / max(self.valid, 1)}


def catalog_rows(index: TrieIndex, catalog: Catalog) -> list[np.ndarray]:
    """Catalog row of every index row, one int64 array per segment (-1 for retired rows missing from the catalog).

    One vectorized hash lookup of the index's ids in the catalog's ids (decoding/id_table.py): no Python string per
    indexed item. Raises ValueError when a live indexed item is not in the catalog."""
    table = IdTable.from_ids(catalog.ids)
    out = []
    for seg in index.segments:
        rows = table.rows_of(seg.item_ids)
        live = seg.live_rows()
        missing = live[rows[live] < 0]
        if missing.size:
            raise ValueError(f"{missing.size} indexed items are not in the catalog (e.g. "
                             f"{seg.item_ids.tolist(missing[:3])}): wrong catalog")
        out.append(rows)
    return out


class DirectSearch:
    """Constrained generation of catalog items for prompts (the model writes an item code, then EOS).

    Args:
        model: a causal LM (transformers / peft), in eval mode.
        tokenizer: its tokenizer; padding is forced to the left (decoder-only batches).
        index: a whole-mode TrieIndex built with this tokenizer.
        catalog: the catalog; returned rows are `catalog.index(item_id)`.
        beams: beam width (>= k); more beams, better recall, slower.
        batch_size: prompts per generate call.
        max_new_tokens: generation budget; default the longest code + 1 (EOS); anything lower is refused.
        decoder: "prefill_once" (decoding/beam.py: each prompt through the model once, the cache repeated to the
            beams, the constraint's torch state on the model's device) or "generate" (transformers' beam search with
            the constraint as a logits processor: every prompt prefilled once per beam). Same selection rule and
            scores (sum of log-probs / length ** length_penalty); "generate" is kept as the reference.

    Raises:
        IndexMismatchError: the index records a tokenizer fingerprint that differs from this tokenizer's.
        ValueError: a span-mode index, an end token that is not the tokenizer's EOS, items missing from the catalog,
            max_new_tokens below the longest code + 1.
    """

    def __init__(self, model: Any, tokenizer: Any, index: TrieIndex, catalog: Any, *, beams: int = 20,
                 batch_size: int = 8, length_penalty: float = 0.0, max_new_tokens: int | None = None,
                 max_length: int | None = None, max_messages: int | None = None, model_dir: str | Path | None = None,
                 decoder: str = "prefill_once"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder
        if index.mode != "whole":
            raise ValueError("DirectSearch needs a whole-mode index (items end with EOS); this one is span mode")
        if tokenizer.eos_token_id != index.end_token_id:
            raise ValueError(f"index ends items with token {index.end_token_id}, tokenizer EOS is {tokenizer.eos_token_id}")
        if index.manifest.get("tokenizer_fingerprint") is not None:  # indexes from raw sequences record none
            index.check_tokenizer(tokenizer)
        self.model, self.tokenizer, self.index, self.catalog = model, tokenizer, index, catalog
        self.beams, self.batch_size, self.length_penalty = int(beams), int(batch_size), float(length_penalty)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._rows = catalog_rows(index, catalog)
        self.max_new_tokens = longest_code(index) + 1 if max_new_tokens is None else int(max_new_tokens)
        check_max_new_tokens(index, self.max_new_tokens)

        # the training window: the last max_messages messages, then cut from the left to leave room for the code
        # (model_dir: the fine-tuned dir whose manifest records them; an adapter's weights come from its base)
        self.max_length = trained_max_length(model, model_dir) if max_length is None else int(max_length)
        self.max_messages = trained_max_messages(model, model_dir) if max_messages is None else int(max_messages)

    def prompt(self, conv: Conversation) -> str:
        """A conversation's prompt as training rendered it: the conversation->item template, the trained window of
        messages, the context cut from the left to fit max_length with room for the answer."""
        return conversation_prompt(conv, self.catalog, self.tokenizer, max_messages=self.max_messages,
                                   max_length=self.max_length, reserve=self.max_new_tokens)

    def search(self, queries: Sequence[Any], k: int, *, exclude: Sequence[Sequence[str] | None] | None = None,
               allow: Sequence[Sequence[str] | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k catalog rows per query. Returns (scores float32 [n, k], rows int64 [n, k]), best first, padded with
        -inf / -1.

        Args:
            queries: prompt strings (already in the training template), or data.formats.Conversation objects (the
                router passes these): rendered with the conversation->item prompt, and, unless `exclude` is
                given, their `exclude` list and already-mentioned items are masked out.
            exclude / allow: per-query item-id lists applied as masks without rebuilding the index."""
        queries, exclude = self._prompts(queries, exclude)
        scores, rows, _ = self.search_with_stats(queries, k, exclude=exclude, allow=allow)
        return scores, rows

    def _prompts(self, queries: Sequence[Any], exclude):
        from dlsearch.data.formats import Conversation
        from dlsearch.data.titles import titles_of

        self._check_rendered([q for q in queries if not isinstance(q, Conversation)])
        if not any(isinstance(q, Conversation) for q in queries):
            return list(queries), exclude
        if exclude is None:  # the excluded and mentioned items with their duplicate groups (data/titles.py)
            titles = titles_of(self.catalog)
            exclude = [sorted(titles.excluded_ids(q.exclusions())) if isinstance(q, Conversation)
                       else None for q in queries]
        prompts = [self.prompt(q) if isinstance(q, Conversation) else q for q in queries]
        return prompts, exclude

    def _check_rendered(self, texts: Sequence[str]) -> None:
        """Warn about a string that is not a rendered prompt (it does not end with the task template's answer
        context): it is fed to the model as written, and a raw request ranks items by chance (on ReDial a bare
        sentence put the title-less item " (2007)" first)."""
        from dlsearch.data.prompts import answer_context

        end = answer_context(self.tokenizer)
        raw = [t for t in texts if isinstance(t, str) and not t.endswith(end)]
        if raw:
            warnings.warn(f"DirectSearch.search got {len(raw)} string(s) that are not rendered prompts (e.g. {raw[0][:60]!r}; "
                          f"a prompt ends with {end!r}); they are fed as written. Pass Conversation objects, or render "
                          f"with DirectSearch.prompt(conv)", stacklevel=3)

    def search_with_stats(self, queries: Sequence[str], k: int, *, exclude=None, allow=None,
                          progress: Any = None) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        rows = np.full((n, k), -1, dtype=np.int64)
        stats = SearchStats()
        beams = max(self.beams, k)
        for lo in range(0, n, self.batch_size):
            hi = min(lo + self.batch_size, n)
            ex = list(exclude[lo:hi]) if exclude is not None else None
            al = list(allow[lo:hi]) if allow is not None else None
            s, r, st = self._batch(list(queries[lo:hi]), k, beams, ex, al)
            scores[lo:hi], rows[lo:hi] = s, r
            stats.add(st)
            if progress is not None:
                progress.update(hi - lo)
        return scores, rows, stats

    @torch.no_grad()
    def _batch(self, prompts: list[str], k: int, beams: int, exclude, allow):
        enc = encode_prompts(self.tokenizer, prompts)
        device = next(self.model.parameters()).device
        enc = {key: v.to(device) for key, v in enc.items()}
        proc = TrieConstraint(self.index, eos_token_id=self.index.end_token_id, rows_per_query=beams,
                              deny=exclude, allow=allow)
        if self.decoder == "prefill_once":
            seqs, sc = constrained_beam_search(self.model, enc["input_ids"], enc["attention_mask"], proc,
                                               num_beams=beams, max_new_tokens=self.max_new_tokens,
                                               pad_token_id=self.pad_id, length_penalty=self.length_penalty)
            return self._rank(seqs.cpu().numpy(), sc.cpu().numpy(), len(prompts), beams, k)
        out = self.model.generate(**enc, num_beams=beams, num_return_sequences=beams, do_sample=False,
                                  max_new_tokens=self.max_new_tokens, logits_processor=LogitsProcessorList([proc]),
                                  pad_token_id=self.pad_id, eos_token_id=self.index.end_token_id,
                                  length_penalty=self.length_penalty, early_stopping=True,
                                  return_dict_in_generate=True, output_scores=True)
        width = enc["input_ids"].shape[1]
        gen = out.sequences[:, width:].cpu().numpy()
        seq_scores = out.sequences_scores.float().cpu().numpy()
        return self._rank(gen, seq_scores, len(prompts), beams, k)

    def _rank(self, gen: np.ndarray, seq_scores: np.ndarray, n: int, beams: int, k: int):
        """Map returned token rows to catalog rows (vectorized trie walk), drop placeholders, dedupe, keep top k."""
        end = self.index.end_token_id
        is_end = gen == end
        has_end = is_end.any(axis=1)
        lengths = np.where(has_end, is_end.argmax(axis=1), gen.shape[1])
        toks = np.where(np.arange(gen.shape[1])[None, :] < lengths[:, None], gen, -1)
        seg_of, row_of = self.index.locate_codes(toks, lengths)  # live items only: a retired code never answers
        cat_rows = np.full(gen.shape[0], -1, dtype=np.int64)
        for s in range(len(self.index.segments)):
            hit = (seg_of == s) & has_end
            cat_rows[hit] = self._rows[s][row_of[hit]]
        real = seq_scores > PLACEHOLDER_SCORE
        stats = SearchStats(returned=int(gen.shape[0]), placeholders=int((~real).sum()))
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        rows = np.full((n, k), -1, dtype=np.int64)
        for q in range(n):  # per query (not per beam): dedupe and truncate a handful of results
            sl = slice(q * beams, (q + 1) * beams)
            cr, sc, ok = cat_rows[sl], seq_scores[sl], real[sl] & (cat_rows[sl] >= 0)
            order = np.argsort(-np.where(ok, sc, -np.inf), kind="stable")
            seen: set[int] = set()
            kept = 0
            for j in order:
                if not ok[j]:
                    break
                stats.valid += 1
                if int(cr[j]) in seen:
                    stats.duplicates += 1
                    continue
                seen.add(int(cr[j]))
                if kept < k:
                    scores[q, kept], rows[q, kept] = sc[j], cr[j]
                    kept += 1
            stats.per_query_valid.append(len(seen))
        return scores, rows, stats

