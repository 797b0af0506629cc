"""Constrained beam search that runs each prompt through the model once and each hypothesis token at most once.

transformers 5's `generate(num_beams=B)` repeats every prompt B times before the prefill, so the prompt (the
expensive part: hundreds of tokens against codes of a few) is computed B times; then every step feeds all B beams one
token each, copying the B-row cache to follow the surviving beams. Here:

- the batch of prompts is prefilled once; the prompt's keys/values stay one row per prompt;
- the tokens of all hypotheses live in one token tree per prompt, appended to that prompt's cache row: a tree node is
  computed once, whatever beams later share it, and no cache row is ever copied or reordered (a pruned hypothesis'
  columns simply stop being attended). Each forward feeds the new tree nodes with a 4D attention mask (a node sees
  its prompt, its ancestors and itself) and their positions;
- forced runs and small branchings fed ahead: when a hypothesis' trie node allows exactly one token (after a title's
  distinctive tokens, the rest of the title and its year are usually forced) or only a few (a year's last digits),
  that subtree is fed in the same forward as the token that entered it, so the log-probs of the next steps are known
  without another model call. On a CPU each forward streams all the weights however few tokens it feeds, so fewer,
  wider forwards win. This lookahead is used only where the step keeps every candidate (beams no longer compete, so
  the nodes fed ahead are likely read); a step where no beam leaves the computed tree runs no model call at all.

The search itself is unchanged and step by step: the log-probs of every running beam at every step are those the
model gives its prefix (a full row where the trie branches, the forced token's log-prob where it does not: the only
allowed token, so the row is otherwise -inf after masking anyway), and the selection rule is transformers' own
(generation/utils.py `_beam_search`, early_stopping=True): per query the top 2B continuations of all beams, the best B
that did not end continue, candidates among the first B that end with EOS (or reach max_new_tokens) enter a pool of B
finished hypotheses scored sum(log p) / generated_length ** length_penalty, and a query stops when its pool is full or
no running beam can still beat the pool's worst. The scores therefore equal `generate`'s `sequences_scores`
(property-tested: identical items, scores within float noise). Nodes fed ahead that beam search prunes or never
picks are the only extra compute. Beams that score as placeholders (below -1e8: the copies of
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
        self.size = n
        self.vocab = root_lp.shape[1]
        self.child_key = torch.zeros(0, dtype=torch.int64, device=dev)  # sorted parent * V + token of fed nodes
        self.child_id = torch.zeros(0, dtype=torch.int64, device=dev)
        self.full_row = torch.arange(n, device=dev)
        self.anc = prompt_mask.bool()  # [nodes, cache columns]
        self.full = root_lp  # [rows, V] log-probs of branching nodes
        self.full_used = n
        self.columns = width

    def child(self, parent: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Fed child of each (parent node, token), -1 where not fed (parent < 0 included)."""
        if self.child_key.shape[0] == 0:
            return torch.full_like(parent, -1)
        key = parent * self.vocab + token
        pos = torch.searchsorted(self.child_key, key).clamp(max=self.child_key.shape[0] - 1)
        return torch.where((self.child_key[pos] == key) & (parent >= 0), self.child_id[pos], -1)

    def add(self, parent: torch.Tensor, token: torch.Tensor, anc: torch.Tensor, forced_tok: torch.Tensor,
            lp: torch.Tensor, columns: int) -> torch.Tensor:
        """Append k nodes, children of `parent` by `token`: attention rows anc bool [k, columns], forced next
        tokens int64 [k] (-1: none), log-probs lp [k, V] after each; returns their ids (consecutive)."""
        k = anc.shape[0]
        first = self.size
        self.size += k
        ids = torch.arange(first, first + k, device=self.dev)
        keys = torch.cat([self.child_key, parent * self.vocab + token])
        order = torch.argsort(keys)
        self.child_key, self.child_id = keys[order], torch.cat([self.child_id, ids])[order]
        self.anc = torch.cat([torch.nn.functional.pad(self.anc, (0, columns - self.columns)), anc], dim=0)
        self.columns = columns
        forced = forced_tok >= 0
        self.forced_tok = torch.cat([self.forced_tok, forced_tok])
        self.forced_lp = torch.cat([self.forced_lp, torch.where(
            forced, lp.gather(1, forced_tok.clamp(min=0)[:, None])[:, 0], 0.0)])
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
        return ids

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
            use_cache and logits_to_keep (transformers 5 decoder models with sdpa or eager attention, peft-wrapped
            included; flash-attention kernels take no 4D mask).
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
        beam_node = tree.child(pn, tokens)
        real = running_scores.view(-1) > PLACEHOLDER
        need = (beam_node < 0) & (pn >= 0) & real
        if bool(need.any()):
            # the subtree below a fed token is fed too only where the next step keeps every candidate (at most 2b
            # of them, the trie says how many): there it is likely to be used; where beams still compete, the
            # lookahead is mostly wasted on beams pruned before they reach it
            load = (allowed.sum(dim=1) * real).view(n, b).sum(dim=1)
            calm = (load <= 2 * b).repeat_interleave(b)
            rows = need.nonzero()[:, 0]
            beam_node = beam_node.clone()
            beam_node[rows] = _feed(model, cache, tree, state, pn[rows], tokens[rows], phase[rows], nodes[rows],
                                    allowed[rows], calm[rows], query_of_row[rows], row_query[rows], prompt_len, t,
                                    max_new_tokens, eos_token_id, pad_token_id, mask_dtype)
    return fin_seq.view(n * b, max_new_tokens), fin_scores.view(n * b)


SPECULATE_DEGREE = 3  # feed every continuation of a node with at most this many (a forced run is 1)
SPECULATE_PER_BEAM = 8  # at most this many speculative nodes per fed beam (plus a few), per forward


def _feed(model, cache, tree: _Tree, state, parent, token, phase, nodes, allowed, calm, q_state, q, prompt_len, t,
          max_new_tokens, eos, pad, mask_dtype) -> torch.Tensor:
    """One forward for r beams that took a token the tree has not computed (parent node, token, the trie state
    after it and its allowed mask, per beam). Besides each such token, where `calm`, the subtree below it is fed as
    far as its nodes have at most SPECULATE_DEGREE continuations other than EOS (EOS ends a hypothesis and is never
    fed): forced runs, and the small branchings of titles (a year's digits, a remake's suffix), level by level,
    while the levels fit the budget and a later step can still read them. One forward then saves the forwards of
    several later steps, each of which costs the weights' whole memory traffic however few tokens it feeds.
    Returns the node of each beam."""
    dev = parent.device
    r = parent.shape[0]
    vocab = allowed.shape[1]
    n = prompt_len.shape[0]
    first = tree.size
    budget = SPECULATE_PER_BEAM * r + 4 * SPECULATE_DEGREE
    # levels of the fed subtree: parent (tree id, or index into the nodes fed here), token, query, depth, allowed
    par, tok, qs, qn, dep, alw = [parent], [token], [q_state], [q], [torch.full((r,), t + 1, device=dev)], [allowed]
    ph, nd, live_calm, count = phase, nodes, calm, r
    while True:
        cont = alw[-1].clone()
        cont[:, eos] = False  # EOS is scored, never fed
        deg = cont.sum(dim=1)
        # a node at depth d is read at step d, which exists only below max_new_tokens
        grow = live_calm & (deg >= 1) & (deg <= SPECULATE_DEGREE) & (dep[-1] + 1 < max_new_tokens)
        cont &= grow[:, None]
        src, ctok = cont.nonzero(as_tuple=True)  # children: index into the last level, token
        k = int(src.shape[0])
        if k == 0 or count + k > budget:
            break
        ids_last = first + count - qn[-1].shape[0] + torch.arange(qn[-1].shape[0], device=dev)
        qq = qs[-1][src]
        ph, nd = state.advance(ph[src], nd[src], ctok, qq)
        par.append(ids_last[src])
        tok.append(ctok)
        qs.append(qq)
        qn.append(qn[-1][src])
        dep.append(dep[-1][src] + 1)
        alw.append(state.allowed(ph, nd, qq, vocab))
        live_calm = live_calm[src]
        count += k
    par_t, tok_t, q_t, dep_t = (torch.cat(x) for x in (par, tok, qn, dep))
    forced_t = _only_token(torch.cat(alw))
    m = count
    # lay the nodes out per query, in level order: offset of each inside its query's new columns
    order = torch.argsort(q_t, stable=True)
    totals = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, q_t, torch.ones_like(q_t))
    first_of_q = torch.cumsum(totals, 0) - totals
    off = torch.empty_like(q_t)
    off[order] = torch.arange(m, device=dev) - first_of_q[q_t[order]]
    width_new = int(totals.max())
    cols_before = tree.columns
    columns = cols_before + width_new
    col = cols_before + off
    # attention rows, level by level: the parent's row plus the node's own column
    anc = torch.zeros((m, columns), dtype=torch.bool, device=dev)
    lo = 0
    for lv in range(len(par)):
        hi = lo + par[lv].shape[0]
        p = par_t[lo:hi]
        if lv == 0:
            anc[lo:hi, :cols_before] = tree.anc[p]
        else:
            anc[lo:hi] = anc[p - first]
        anc[torch.arange(lo, hi, device=dev), col[lo:hi]] = True
        lo = hi
    ids = torch.full((n, width_new), pad, dtype=torch.int64, device=dev)
    pos = torch.zeros((n, width_new), dtype=torch.int64, device=dev)
    mask = torch.zeros((n, width_new, columns), dtype=torch.bool, device=dev)
    mask[:, torch.arange(width_new, device=dev), cols_before + torch.arange(width_new, device=dev)] = True  # padding sees itself
    ids[q_t, off] = tok_t
    pos[q_t, off] = prompt_len[q_t] + dep_t - 1  # dep_t tokens generated up to and including this one
    mask[q_t, off] = anc
    bias = torch.zeros(mask.shape, dtype=mask_dtype, device=dev).masked_fill_(~mask, torch.finfo(mask_dtype).min)[:, None]
    out = model(input_ids=ids, attention_mask=bias, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=0)
    lp = torch.log_softmax(out.logits.float(), dim=-1)[q_t, off]  # [m, V]
    del out
    new = tree.add(par_t, tok_t, anc, forced_t, lp, columns)
    return new[:r]
