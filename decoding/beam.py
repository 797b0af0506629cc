"""Constrained beam search that runs each prompt through the model once and each hypothesis token at most once.

transformers 5's `generate(num_beams=B)` repeats every prompt B times before the prefill, so the prompt (the
expensive part: hundreds of tokens against codes of a few) is computed B times; then every step feeds all B beams one
token each, copying the B-row cache to follow the surviving beams. Here:

- the batch of prompts is prefilled once; the prompt's keys/values stay one row per prompt;
- the tokens of all hypotheses live in one token tree per prompt, appended to that prompt's cache row: a tree node is
  computed once, whatever beams later share it, and no cache row is ever copied or reordered (a pruned hypothesis'
  columns simply stop being attended). Each forward feeds the new tree nodes with a 4D attention mask (a node sees
  its prompt, its ancestors and itself) and their positions;
- forced runs: when a hypothesis' trie node allows exactly one token (after a title's distinctive tokens, the rest of
  the title and its year are usually forced), the whole run is fed in the same forward as the token that entered it,
  so the log-probs of its next steps are known without another model call. Beams whose next token is known cost no
  compute at that step; a step where no beam left the known tree runs no model call at all.

The search itself is unchanged and step by step: the log-probs of every running beam at every step are those the
model gives its prefix (a full row where the trie branches, the forced token's log-prob where it does not: the only
allowed token, so the row is otherwise -inf after masking anyway), and the selection rule is transformers' own
(generation/utils.py `_beam_search`, early_stopping=True): per query the top 2B continuations of all beams, the best B
that did not end continue, candidates among the first B that end with EOS (or reach max_new_tokens) enter a pool of B
finished hypotheses scored sum(log p) / generated_length ** length_penalty, and a query stops when its pool is full or
no running beam can still beat the pool's worst. The scores therefore equal `generate`'s `sequences_scores`
(property-tested: identical items, scores within float noise). Lookahead tokens of a forced run that beam search
prunes before reaching them are the only extra compute. Beams that score as placeholders (below -1e8: the copies of
beam 0 after the first step, or continuations with no allowed token) are never fed; their candidates stay
placeholders, as in `generate`.

The trie constraint is the device-native one (decoding/device_trie.py) of the TrieConstraint passed in.
"""

from __future__ import annotations

from typing import Any

import torch

from dlsearch.decoding.constraint import TrieConstraint, check_max_new_tokens

NEG = -1.0e9  # transformers' placeholder score for empty slots and for candidates that may not be chosen
PLACEHOLDER = -1.0e8  # a running score below this is a placeholder (real ones are >= floor * max_new_tokens)


class _Tree:
    """The token tree of every prompt: node arrays (one entry per computed token, plus one root per prompt) and the
    log-prob rows the search reads. Node i: the next token if the trie forces it (-1 if not) with its log-prob, the
    fed child that continues a forced run (-1 if not fed yet), the row of its full log-probs in `full` (nodes where
    the trie branches), and the cache columns it attends to (its prompt, its ancestors, itself)."""

    def __init__(self, prompt_mask: torch.Tensor, root_lp: torch.Tensor, root_forced: torch.Tensor):
        n, width = prompt_mask.shape
        dev = prompt_mask.device
        self.dev = dev
        self.forced_tok = root_forced
        self.forced_lp = torch.where(root_forced >= 0, root_lp.gather(1, root_forced.clamp(min=0)[:, None])[:, 0], 0.0)
        self.next = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.full_row = torch.arange(n, device=dev)
        self.anc = prompt_mask.bool()  # [nodes, cache columns]
        self.full = root_lp  # [rows, V] log-probs of branching nodes
        self.full_used = n
        self.columns = width

    def add(self, anc: torch.Tensor, forced_tok: torch.Tensor, lp: torch.Tensor, columns: int) -> torch.Tensor:
        """Append k nodes: attention rows anc bool [k, columns], forced next tokens int64 [k] (-1: none), log-probs
        lp [k, V] after each; returns their ids."""
        k = anc.shape[0]
        first = self.next.shape[0]
        self.anc = torch.cat([torch.nn.functional.pad(self.anc, (0, columns - self.columns)), anc], dim=0)
        self.columns = columns
        forced = forced_tok >= 0
        self.forced_tok = torch.cat([self.forced_tok, forced_tok])
        self.forced_lp = torch.cat([self.forced_lp, torch.where(
            forced, lp.gather(1, forced_tok.clamp(min=0)[:, None])[:, 0], 0.0)])
        self.next = torch.cat([self.next, torch.full((k,), -1, dtype=torch.int64, device=self.dev)])
        branching = (~forced).nonzero()[:, 0]
        rows = torch.full((k,), -1, dtype=torch.int64, device=self.dev)
        m = int(branching.shape[0])
        if m:
            if self.full_used + m > self.full.shape[0]:  # grow by doubling: amortised copies
                grow = max(self.full.shape[0], m)
                self.full = torch.cat([self.full, self.full.new_empty((grow, self.full.shape[1]))])
            self.full[self.full_used:self.full_used + m] = lp[branching]
            rows[branching] = torch.arange(self.full_used, self.full_used + m, device=self.dev)
            self.full_used += m
        self.full_row = torch.cat([self.full_row, rows])
        return torch.arange(first, first + k, device=self.dev)

    def log_probs(self, nodes: torch.Tensor, vocab: int) -> torch.Tensor:
        """float32 [rows, V]: the log-probs at each node (a forced node: its token's log-prob, -inf elsewhere;
        node -1, a placeholder beam: zeros)."""
        ok = nodes >= 0
        nd = nodes.clamp(min=0)
        lp = self.full[self.full_row[nd].clamp(min=0)]
        ftok = self.forced_tok[nd]
        forced = ok & (ftok >= 0)
        lp[forced] = -float("inf")
        lp[forced, ftok[forced]] = self.forced_lp[nd[forced]]
        lp[~ok] = 0.0
        return lp


def _only_token(allowed: torch.Tensor) -> torch.Tensor:
    """int64 [rows]: the only allowed token of each row of a bool [rows, V] mask, or -1 where several are allowed."""
    return torch.where(allowed.sum(dim=1) == 1, allowed.to(torch.uint8).argmax(dim=1), -1)


@torch.no_grad()
def constrained_beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            constraint: TrieConstraint, *, num_beams: int, max_new_tokens: int, pad_token_id: int,
                            length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over a batch of left-padded prompts, each prompt prefilled once, each tree node computed once.

    Args:
        model: a causal LM whose forward takes input_ids, a 2D or custom 4D float attention_mask, position_ids, cache,
            use_cache and logits_to_keep (transformers 5 decoder models, peft-wrapped included).
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
    prompt_len = attention_mask.long().sum(dim=1)  # [n]: the first generated token's position
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = out.cache  # a transformers DynamicCache (per layer keys/values [n, heads, length, dim]): rows never copied
    root_lp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [n, V]
    del out
    vocab = root_lp.shape[-1]
    state = constraint.device_state(dev, vocab)
    query_of_row = constraint.query_rows(n * b, dev)
    phase, nodes = state.initial(input_ids[:, -1].repeat_interleave(b, dim=0))
    allowed = state.allowed(phase, nodes, query_of_row, vocab)  # [n * b, V]: what each beam may emit next
    tree = _Tree(attention_mask, root_lp, _only_token(allowed[::b]))
    beam_node = torch.arange(n, device=dev).repeat_interleave(b)  # every beam starts at its prompt's root
    row_query = torch.arange(n, device=dev).repeat_interleave(b)  # the query of each flat beam row
    mask_dtype = next(model.parameters()).dtype  # the 4D mask is added to the attention scores

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
        log_probs = state.mask(tree.log_probs(beam_node, vocab), phase, nodes, query_of_row, allowed=allowed)
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

        # the kept beams follow their parents in the trie and in the token tree
        phase, nodes = state.advance(phase[parent], nodes[parent], tokens, query_of_row)
        allowed = state.allowed(phase, nodes, query_of_row, vocab)
        pn = beam_node[parent]
        pnc = pn.clamp(min=0)
        known = (pn >= 0) & (tree.forced_tok[pnc] == tokens) & (tree.next[pnc] >= 0)
        beam_node = torch.where(known, tree.next[pnc], -1)
        real = running_scores.view(-1) > PLACEHOLDER
        need = ~known & (pn >= 0) & real
        if bool(need.any()):
            # forced runs are fed whole only where the next step keeps every candidate (at most 2b of them, the
            # trie says how many): there the runs are likely to be used; where beams still compete, a run's
            # lookahead is mostly wasted on beams pruned before they reach it
            load = (allowed.sum(dim=1) * real).view(n, b).sum(dim=1)
            calm = (load <= 2 * b).repeat_interleave(b)
            rows = need.nonzero()[:, 0]
            beam_node = _feed(model, cache, tree, state, rows, pn, tokens, phase, nodes, _only_token(allowed[rows]),
                              calm[rows], row_query, query_of_row, prompt_len, beam_node, t, max_new_tokens,
                              eos_token_id, pad_token_id, vocab, mask_dtype)
    return fin_seq.view(n * b, max_new_tokens), fin_scores.view(n * b)


def _feed(model, cache, tree: _Tree, state, rows, pn, tokens, phase, nodes, first_forced, calm, row_query, query_of_row,
          prompt_len, beam_node, t, max_new_tokens, eos, pad, vocab, mask_dtype):
    """One forward for the beams `rows` that took a token the tree has not computed: each feeds that token plus the
    run of tokens the trie forces after it (as far as a later step can still use them), laid out contiguously in its
    prompt's new cache columns. Returns beam_node with those beams at their new nodes."""
    dev = rows.device
    r = rows.shape[0]
    # walk the forced runs (vectorised over beams; at most max_new_tokens rounds)
    run = [tokens[rows]]
    forced = []
    ph, nd, qq = phase[rows], nodes[rows], query_of_row[rows]
    active = torch.ones(r, dtype=torch.bool, device=dev)
    lengths = torch.ones(r, dtype=torch.int64, device=dev)  # tokens each run feeds
    j = 0
    while True:
        f = first_forced if j == 0 else _only_token(state.allowed(ph, nd, qq, vocab))  # forced after run[..j]
        forced.append(torch.where(active, f, -1))
        # a node at depth t + 2 + j is read at step t + 2 + j, which exists only below max_new_tokens
        cont = active & (f >= 0) & (f != eos) & (t + 2 + j < max_new_tokens) & calm
        if not bool(cont.any()):
            break
        run.append(torch.where(cont, f, pad))
        ph, nd = state.advance(ph, nd, f.clamp(min=0), qq)
        active = cont
        lengths += cont
        j += 1
    run_t = torch.stack(run, dim=1)  # [r, L] tokens of each run (pad past its end)
    forced_t = torch.stack(forced[: run_t.shape[1]], dim=1)  # [r, L] the token forced after each run token
    # lay the runs out per query: offset of each run inside its query's new columns
    q = row_query[rows]
    n = prompt_len.shape[0]
    order = torch.argsort(q, stable=True)
    totals = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, q, lengths)
    starts = torch.cumsum(lengths[order], 0) - lengths[order]
    first_of_q = torch.cumsum(totals, 0) - totals
    start = torch.empty_like(starts)
    start[order] = starts - first_of_q[q[order]]
    width_new = int(totals.max())
    cols_before = tree.columns
    columns = cols_before + width_new
    # the fed tokens, flattened: run i, position k
    L = run_t.shape[1]
    kk = torch.arange(L, device=dev)[None, :].expand(r, L)
    live = kk < lengths[:, None]
    ri, ki = live.nonzero(as_tuple=True)  # [m] in run-major order
    fq = q[ri]
    off = start[ri] + ki
    col = cols_before + off
    # attention rows: the parent's row, plus the run's own columns up to this token
    parent_anc = torch.nn.functional.pad(tree.anc[pn[rows]], (0, width_new))  # [r, columns]
    all_cols = torch.arange(columns, device=dev)[None, :]
    anc = parent_anc[ri] | ((all_cols >= (cols_before + start[ri])[:, None]) & (all_cols <= col[:, None]))
    ids = torch.full((n, width_new), pad, dtype=torch.int64, device=dev)
    pos = torch.zeros((n, width_new), dtype=torch.int64, device=dev)
    mask = torch.zeros((n, width_new, columns), dtype=torch.bool, device=dev)
    mask[:, torch.arange(width_new, device=dev), cols_before + torch.arange(width_new, device=dev)] = True  # padding sees itself
    ids[fq, off] = run_t[ri, ki]
    depth = t + 1 + ki  # tokens generated up to and including this one
    pos[fq, off] = prompt_len[fq] + depth - 1
    mask[fq, off] = anc
    bias = torch.zeros(mask.shape, dtype=mask_dtype, device=dev).masked_fill_(~mask, torch.finfo(mask_dtype).min)[:, None]
    out = model(input_ids=ids, attention_mask=bias, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=0)
    lp = torch.log_softmax(out.logits.float(), dim=-1)[fq, off]  # [m, V]
    del out
    # a run's last node may still force a token (EOS, or a run cut by the budget or by a busy step): its log-prob
    # is stored, and a later feed starts from there
    new = tree.add(anc, forced_t[ri, ki], lp, columns)
    # link each run: node k -> node k + 1 (the forced continuation)
    nxt = torch.full((r, L), -1, dtype=torch.int64, device=dev)
    nxt[ri, ki] = new
    succ = torch.cat([nxt[:, 1:], torch.full((r, 1), -1, dtype=torch.int64, device=dev)], dim=1)[ri, ki]
    tree.next[new] = succ
    beam_node = beam_node.clone()
    beam_node[rows] = nxt[:, 0]
    return beam_node
