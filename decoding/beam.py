"""Constrained beam search that runs each prompt through the model once.

transformers 5's `generate(num_beams=B)` repeats every prompt B times before the prefill, so the prompt (the
expensive part: hundreds of tokens against codes of a few) is computed B times. Here the batch of prompts is
prefilled once, the KV cache is repeated to B beams (`Cache.batch_repeat_interleave`), and all beams then step
together under the trie constraint's device state (decoding/device_trie.py), advanced with the parent of each kept
beam, which the loop knows, so no per-step matching of rows is needed.

The selection rule is transformers' own (generation/utils.py `_beam_search`, early_stopping=True): per query the
top 2B continuations of all beams, the best B that did not end continue, candidates among the first B that end
with EOS (or reach max_new_tokens) enter a pool of B finished hypotheses scored sum(log p) / generated_length **
length_penalty, and a query stops when its pool is full or no running beam can still beat the pool's worst. The
scores therefore equal `generate`'s `sequences_scores` (property: identical items, scores within float noise).
"""

from __future__ import annotations

from typing import Any

import torch

from dlsearch.decoding.constraint import TrieConstraint, check_max_new_tokens

NEG = -1.0e9  # transformers' placeholder score for empty slots and for candidates that may not be chosen


@torch.no_grad()
def constrained_beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            constraint: TrieConstraint, *, num_beams: int, max_new_tokens: int, pad_token_id: int,
                            length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over a batch of left-padded prompts, each prompt prefilled once.

    Args:
        model: a causal LM whose forward takes input_ids, attention_mask, position_ids, cache, use_cache
            and logits_to_keep (transformers 5 decoder models, peft-wrapped included).
        input_ids, attention_mask: int64 [n, width], padded on the left.
        constraint: a whole-mode TrieConstraint built with rows_per_query=num_beams (its allow/deny lists are per
            prompt); its device state (tries, filters, masks as tensors on the model's device) does the masking.
        num_beams: beams per prompt; max_new_tokens: the budget (>= longest code + 1, checked).
        pad_token_id: fill after EOS (the constraint's EOS ends an item).
        length_penalty: finished scores are sum(log p) / generated_length ** length_penalty.

    Returns:
        sequences int64 [n * num_beams, max_new_tokens] (generated tokens only, pad after EOS) and scores float32
        [n * num_beams], best first per prompt; empty slots score -1e9 (as `generate`'s placeholders).
    """
    n, width = input_ids.shape
    b = int(num_beams)
    dev = input_ids.device
    check_max_new_tokens(constraint.index, max_new_tokens)
    if constraint.span:
        raise ValueError("constrained_beam_search needs a whole-mode index (one item, then EOS)")
    if not constraint._global and constraint.rows_per_query != b:
        raise ValueError(f"the constraint has rows_per_query {constraint.rows_per_query}, the search {b} beams")
    eos_token_id = constraint.eos
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = out.cache  # a transformers DynamicCache (per layer keys/values [rows, heads, length, dim])
    cache.batch_repeat_interleave(b)  # the prompt's keys/values, once per beam, without recomputing them
    logits = out.logits[:, -1, :].float()  # [n, V]
    del out
    vocab = logits.shape[-1]
    state = constraint.device_state(dev, vocab)
    query_of_row = constraint.query_rows(n * b, dev)
    log_probs = torch.log_softmax(logits, dim=-1).repeat_interleave(b, dim=0)  # [n * b, V]
    attn = attention_mask.repeat_interleave(b, dim=0)
    pos = position_ids[:, -1:].repeat_interleave(b, dim=0)
    phase, nodes = state.initial(input_ids[:, -1].repeat_interleave(b, dim=0))

    base = (torch.arange(n, device=dev) * b)[:, None]  # [n, 1]: first row of each query
    running_scores = torch.zeros((n, b), dtype=torch.float32, device=dev)
    running_scores[:, 1:] = NEG  # all beams start as copies of one: only beam 0 expands at the first step
    running_seq = torch.full((n, b, max_new_tokens), pad_token_id, dtype=torch.int64, device=dev)
    fin_seq = running_seq.clone()
    fin_scores = torch.full((n, b), NEG, dtype=torch.float32, device=dev)
    fin_done = torch.zeros((n, b), dtype=torch.bool, device=dev)
    improvable = torch.ones((n, 1), dtype=torch.bool, device=dev)
    top_b = torch.arange(2 * b, device=dev)[None, :] < b  # only the first b candidates may finish

    for t in range(max_new_tokens):
        log_probs = state.mask(log_probs, phase, nodes, query_of_row)
        acc = (log_probs.view(n, b, vocab) + running_scores[:, :, None]).view(n, b * vocab)
        top_lp, top_idx = torch.topk(acc, k=2 * b)  # [n, 2b]
        cand_beam = top_idx // vocab
        cand_tok = top_idx % vocab
        cand_seq = torch.gather(running_seq, 1, cand_beam[:, :, None].expand(-1, -1, max_new_tokens)).clone()
        cand_seq[:, :, t] = cand_tok
        ends = (cand_tok == eos_token_id) | (t + 1 >= max_new_tokens)  # transformers' stopping criteria

        # the best b candidates that did not end keep running
        run_lp = top_lp + ends.float() * NEG
        keep = torch.topk(run_lp, k=b).indices  # [n, b]
        running_scores = torch.gather(run_lp, 1, keep)
        running_seq = torch.gather(cand_seq, 1, keep[:, :, None].expand(-1, -1, max_new_tokens))
        parent = (base + torch.gather(cand_beam, 1, keep)).view(-1)  # [n * b] flat rows of the parents
        tokens = torch.gather(cand_tok, 1, keep).view(-1)

        # candidates among the first b that ended join the finished pool (unless the query is done)
        fin_lp = top_lp / float((t + 1) ** length_penalty)
        full = fin_done.all(dim=1, keepdim=True)
        fin_lp = fin_lp + full.float() * NEG + (~improvable).float() * NEG + (~(ends & top_b)).float() * NEG
        merged = torch.cat([fin_scores, fin_lp], dim=1)
        pick = torch.topk(merged, k=b).indices
        fin_scores = torch.gather(merged, 1, pick)
        fin_seq = torch.gather(torch.cat([fin_seq, cand_seq], dim=1), 1, pick[:, :, None].expand(-1, -1, max_new_tokens))
        fin_done = torch.gather(torch.cat([fin_done, ends & top_b], dim=1), 1, pick)

        # can a running beam still beat the worst finished one? (transformers' early-stop heuristic)
        best_running = running_scores[:, :1] / float((t + 1) ** length_penalty)
        worst = torch.where(fin_done, fin_scores.min(dim=1, keepdim=True).values, NEG)
        improvable = improvable & (best_running > worst).any(dim=-1, keepdim=True)
        go_on = improvable.any() & ~fin_done.all() & ~ends.all()
        if t + 1 >= max_new_tokens or not bool(go_on):  # one scalar read per step, as generate's own stop check
            break

        # advance the kept beams: cache rows and constraint state follow their parents
        cache.reorder_cache(parent)
        phase, nodes = state.advance(phase[parent], nodes[parent], tokens, query_of_row)
        attn = torch.cat([attn, torch.ones((n * b, 1), dtype=attn.dtype, device=dev)], dim=1)
        pos = pos + 1
        out = model(input_ids=tokens[:, None], attention_mask=attn, position_ids=pos, cache=cache,
                    use_cache=True, logits_to_keep=1)
        cache = out.cache
        log_probs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        del out
    return fin_seq.view(n * b, max_new_tokens), fin_scores.view(n * b)
