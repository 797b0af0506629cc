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

The search itself is unchanged and step by step, over sparse candidates: each beam's allowed tokens come from the
trie as (row, token) pairs (`DeviceTrieState.allowed_pairs`: one forced token or a handful inside a title), each fed
node keeps the log-probs of its allowed tokens only (torch's log_softmax over the vocabulary, then a gather), and the
top 2B continuations are picked among those pairs, never among a dense [B, V] matrix (every other entry of
transformers' matrix is -inf). The selection rule is transformers' own (generation/utils.py `_beam_search`,
early_stopping=True): per query the top 2B continuations of all beams, the best B that did not end continue,
candidates among the first B that end with EOS (or reach max_new_tokens) enter a pool of B finished hypotheses
scored sum(log p) / generated_length ** length_penalty, and a query stops when its pool is full or no running beam
can still beat the pool's worst. The scores therefore equal `generate`'s `sequences_scores` (property-tested:
identical items, scores within float noise). Nodes fed ahead that beam search prunes or never picks are the only
extra compute. Beams that score as placeholders (below -1e8: the copies of beam 0 after the first step, or
continuations with no allowed token) are never fed; their candidates stay placeholders, as in `generate`; when they
reach a query's top 2B (tries with fewer than 2B candidates) their tied scores make torch.topk's order matter, so
that step ranks the dense matrix `generate` ranks.

The trie constraint is the device-native one (decoding/device_trie.py) of the TrieConstraint passed in.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from dlsearch.decoding.constraint import TrieConstraint, check_max_new_tokens

# transformers renamed the KV cache argument and output field `past_key_values` -> `cache` during 5.x (5.24 has both
# argument names, the old one deprecated; 5.17, which the GPU image ships, only the old one): use the installed one
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

NEG = -1.0e9  # transformers' placeholder score for empty slots and for candidates that may not be chosen
PLACEHOLDER = -1.0e8  # a running score below this is a placeholder (real ones are >= floor * max_new_tokens)


class _Tree:
    """The token tree of every prompt: node arrays (one entry per computed token, plus one root per prompt), the
    fed children of each node, the cache columns each node attends to (its prompt, its ancestors, itself), and the
    log-probs the search reads, kept sparse: for each node only its allowed next tokens (a forced token, a handful
    inside a title, the title starts at a root), as sorted keys node * V + token with their log-probs."""

    def __init__(self, prompt_mask: torch.Tensor, vocab: int, lp_key: torch.Tensor, lp_val: torch.Tensor):
        n, width = prompt_mask.shape
        dev = prompt_mask.device
        self.dev = dev
        self.size = n
        self.vocab = vocab
        self.child_key = torch.zeros(0, dtype=torch.int64, device=dev)  # sorted parent * V + token of fed nodes
        self.child_id = torch.zeros(0, dtype=torch.int64, device=dev)
        self.anc = prompt_mask.bool()  # [nodes, cache columns]
        self.columns = width
        order = torch.argsort(lp_key)
        self.lp_key, self.lp_val = lp_key[order], lp_val[order]  # [pairs]: node * V + allowed token, its log-prob

    @staticmethod
    def _find(keys: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Position of each key in the sorted keys, and whether it is there."""
        if keys.shape[0] == 0:
            return torch.zeros_like(key), torch.zeros(key.shape, dtype=torch.bool, device=key.device)
        pos = torch.searchsorted(keys, key).clamp(max=keys.shape[0] - 1)
        return pos, keys[pos] == key

    def child(self, parent: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Fed child of each (parent node, token), -1 where not fed (parent < 0 included)."""
        if self.child_key.shape[0] == 0:
            return torch.full_like(parent, -1)
        pos, found = self._find(self.child_key, parent * self.vocab + token)
        return torch.where(found & (parent >= 0), self.child_id[pos], -1)

    def log_probs(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """float32 [pairs]: the log-prob of each token at each node (node -1, a placeholder beam: 0, the value its
        row has in `generate` before masking)."""
        pos, found = self._find(self.lp_key, nodes.clamp(min=0) * self.vocab + tokens)
        return torch.where(found & (nodes >= 0), self.lp_val[pos], 0.0)

    def add(self, parent: torch.Tensor, token: torch.Tensor, anc: torch.Tensor, columns: int,
            pair_node: torch.Tensor, pair_tok: torch.Tensor, pair_lp: torch.Tensor) -> torch.Tensor:
        """Append k nodes, children of `parent` by `token`: attention rows anc bool [k, columns]; the log-probs
        pair_lp of their allowed next tokens pair_tok (pair_node: 0..k-1, which new node). Returns their ids."""
        k = anc.shape[0]
        first = self.size
        self.size += k
        ids = torch.arange(first, first + k, device=self.dev)
        keys = torch.cat([self.child_key, parent * self.vocab + token])
        order = torch.argsort(keys)
        self.child_key, self.child_id = keys[order], torch.cat([self.child_id, ids])[order]
        self.anc = torch.cat([torch.nn.functional.pad(self.anc, (0, columns - self.columns)), anc], dim=0)
        self.columns = columns
        keys = torch.cat([self.lp_key, (first + pair_node) * self.vocab + pair_tok])
        order = torch.argsort(keys)
        self.lp_key, self.lp_val = keys[order], torch.cat([self.lp_val, pair_lp])[order]
        return ids


def _pair_log_probs(logits: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """float32 [pairs]: log_softmax(logits)[rows, tokens], the few allowed entries of each row. torch's own
    log_softmax (not logits - logsumexp: its summation rounds differently, ~1e-5 per token), so the scores add up
    as `generate`'s do; only the gathered entries are kept."""
    return torch.log_softmax(logits.float(), dim=-1)[rows, tokens]


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
    cache = getattr(out, CACHE)  # a transformers DynamicCache (per layer keys/values [n, heads, length, dim]): rows never copied
    root_logits = out.logits[:, -1, :]  # [n, V]
    del out
    vocab = root_logits.shape[-1]
    state = constraint.device_state(dev, vocab)
    query_of_row = constraint.query_rows(n * b, dev)
    phase, nodes = state.initial(input_ids[:, -1].repeat_interleave(b, dim=0))
    # what each beam may emit next, as (row, token) pairs sorted by row: the candidates of the next step
    p_row, p_tok = state.allowed_pairs(phase, nodes, query_of_row, vocab)
    first = p_row % b == 0  # every beam of a prompt starts at its root: beam 0's pairs are the root's
    root = p_row[first] // b
    tree = _Tree(attention_mask, vocab, root * vocab + p_tok[first],
                 _pair_log_probs(root_logits, root, p_tok[first]))
    del root_logits
    beam_node = torch.arange(n, device=dev).repeat_interleave(b)  # every beam starts at its prompt's root
    row_query = torch.arange(n, device=dev).repeat_interleave(b)  # the query of each flat beam row
    mask_dtype = next(model.parameters()).dtype  # the 4D mask is added to the attention scores
    floor = state.floor
    query_ids = torch.arange(n, device=dev)

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
        # the candidates: each beam's allowed tokens only (transformers scores the dense [beams, V] matrix, where
        # every other entry is -inf); allowed tokens' NaN / -inf / scores below the floor become the floor, as
        # DeviceTrieState.mask does
        lp = tree.log_probs(beam_node[p_row], p_tok).nan_to_num_(nan=floor, neginf=floor).clamp_min_(floor)
        p_q = p_row // b
        val = lp + running_scores.view(-1)[p_row]
        real_pairs = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, p_q, (val > PLACEHOLDER).long())
        placeholder = (running_scores > -float("inf")) & (running_scores <= PLACEHOLDER)
        if bool((placeholder.any(dim=1) & (real_pairs < 2 * b)).any()):
            # placeholders reach the top 2b: their scores tie (-1e9 + lp rounds to -1e9 in float32), and which of
            # them torch.topk returns decides which slots of the finished pool fill, so the pick follows the very
            # [n, beams * V] matrix `generate` ranks (tiny tries only: a real catalog has >= 2b candidates)
            dense = torch.full((n * b, vocab), -float("inf"), dtype=torch.float32, device=dev)
            dense[p_row, p_tok] = val
            top_lp, top_idx = torch.topk(dense.view(n, b * vocab), k=2 * b)  # [n, 2b]
            cand_beam, cand_tok = top_idx // vocab, top_idx % vocab
        else:
            starts = torch.searchsorted(p_q, query_ids)  # pairs are sorted by row, so by query
            slot = torch.arange(p_row.shape[0], device=dev) - starts[p_q]
            cols = max(int(slot.max()) + 1 if slot.numel() else 0, 2 * b)
            # [n, cols]: each query's candidates in (beam, token) order, as the flat index transformers ranks;
            # padding -inf (as the disallowed tokens there), never EOS
            acc = torch.full((n, cols), -float("inf"), dtype=torch.float32, device=dev)
            acc[p_q, slot] = val
            beam_of = torch.zeros((n, cols), dtype=torch.int64, device=dev)
            beam_of[p_q, slot] = p_row % b
            tok_of = torch.full((n, cols), (eos_token_id + 1) % vocab, dtype=torch.int64, device=dev)
            tok_of[p_q, slot] = p_tok
            top_lp, top_i = torch.topk(acc, k=2 * b)  # [n, 2b]
            cand_beam = torch.gather(beam_of, 1, top_i)
            cand_tok = torch.gather(tok_of, 1, top_i)
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
        p_row, p_tok = state.allowed_pairs(phase, nodes, query_of_row, vocab)
        pn = beam_node[parent]
        beam_node = tree.child(pn, tokens)
        real = running_scores.view(-1) > PLACEHOLDER
        need = (beam_node < 0) & (pn >= 0) & real
        if bool(need.any()):
            # the subtree below a fed token is fed too only where the next step keeps every candidate (at most 2b
            # of them, the trie says how many): there it is likely to be used; where beams still compete, the
            # lookahead is mostly wasted on beams pruned before they reach it
            load = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, p_row // b, real[p_row].long())
            calm = (load <= 2 * b).repeat_interleave(b)
            rows = need.nonzero()[:, 0]
            beam_node = beam_node.clone()
            beam_node[rows] = _feed(model, cache, tree, state, pn[rows], tokens[rows], phase[rows], nodes[rows],
                                    calm[rows], query_of_row[rows], row_query[rows], prompt_len, t,
                                    max_new_tokens, eos_token_id, pad_token_id, mask_dtype)
    return fin_seq.view(n * b, max_new_tokens), fin_scores.view(n * b)


SPECULATE_DEGREE = 3  # feed every continuation of a node with at most this many (a forced run is 1)
SPECULATE_PER_BEAM = 8  # at most this many speculative nodes per fed beam (plus a few), per forward


def _feed(model, cache, tree: _Tree, state, parent, token, phase, nodes, calm, q_state, q, prompt_len, t,
          max_new_tokens, eos, pad, mask_dtype) -> torch.Tensor:
    """One forward for r beams that took a token the tree has not computed (parent node, token, the trie state
    after it, per beam). Besides each such token, where `calm`, the subtree below it is fed as far as its nodes
    have at most SPECULATE_DEGREE continuations other than EOS (EOS ends a hypothesis and is never fed): forced
    runs, and the small branchings of titles (a year's digits, a remake's suffix), level by level, while the
    levels fit the budget and a later step can still read them. One forward then saves the forwards of several
    later steps, each of which costs the weights' whole memory traffic however few tokens it feeds.
    Returns the node of each beam."""
    dev = parent.device
    r = parent.shape[0]
    vocab = tree.vocab
    n = prompt_len.shape[0]
    first = tree.size
    budget = SPECULATE_PER_BEAM * r + 4 * SPECULATE_DEGREE
    # levels of the fed subtree: parent (tree id, or index into the nodes fed here), token, query, depth, and the
    # allowed (node, token) pairs of its nodes (node numbered among all the nodes fed here)
    pr, pt = state.allowed_pairs(phase, nodes, q_state, vocab)
    par, tok, qs, qn, dep = [parent], [token], [q_state], [q], [torch.full((r,), t + 1, device=dev)]
    pairs_node, pairs_tok = [pr], [pt]
    ph, nd, live_calm, count = phase, nodes, calm, r
    while True:
        width = qn[-1].shape[0]
        cont = pt != eos  # EOS is scored, never fed
        deg = torch.zeros(width, dtype=torch.int64, device=dev).index_add_(0, pr, cont.long())
        # a node at depth d is read at step d, which exists only below max_new_tokens
        grow = live_calm & (deg >= 1) & (deg <= SPECULATE_DEGREE) & (dep[-1] + 1 < max_new_tokens)
        sel = cont & grow[pr]
        src, ctok = pr[sel], pt[sel]  # children: index into the last level, token
        k = int(src.shape[0])
        if k == 0 or count + k > budget:
            break
        level_first = count - width  # the last level's first node among the nodes fed here
        qq = qs[-1][src]
        ph, nd = state.advance(ph[src], nd[src], ctok, qq)
        par.append(first + level_first + src)
        tok.append(ctok)
        qs.append(qq)
        qn.append(qn[-1][src])
        dep.append(dep[-1][src] + 1)
        pr, pt = state.allowed_pairs(ph, nd, qq, vocab)
        pairs_node.append(count + pr)
        pairs_tok.append(pt)
        live_calm = live_calm[src]
        count += k
    par_t, tok_t, q_t, dep_t = (torch.cat(x) for x in (par, tok, qn, dep))
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
    out = model(input_ids=ids, attention_mask=bias, position_ids=pos, use_cache=True, logits_to_keep=0, **{CACHE: cache})
    pn_t, ptok_t = torch.cat(pairs_node), torch.cat(pairs_tok)
    logits = out.logits[q_t, off]  # [m, V]
    del out
    new = tree.add(par_t, tok_t, anc, columns, pn_t, ptok_t, _pair_log_probs(logits, pn_t, ptok_t))
    return new[:r]
