"""The trie constraint's state machine on torch tensors, on the model's device (the "torch" backend).

Every array of the trie (edge tokens, CSR starts, terminal bits, the dense root table) and every filter key lives on
the device; per-row state (phase, one node per segment) is advanced with tensor ops, and allowed-token masks are
built with a scatter. Nothing is copied to the host per step and nothing branches on device values, so on CUDA a step
never waits for the GPU. Shapes are static: the binary search runs a fixed number of rounds (log2 of the largest
degree) and the allowed edges of inner nodes are gathered as a dense [rows, max_degree] block.

Used by `TrieConstraint(..., backend="torch")` (inside `generate`) and by the prefill-once beam search
(decoding/beam.py), which knows each row's parent and so calls `advance` directly. The numpy backend in
decoding/constraint.py is the same state machine on the host; a property test keeps the two equal.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from dlsearch.decoding.trie import TokenTrie

IN, OUT, DONE, DEAD = 0, 1, 2, 3  # same phases as decoding/constraint.py


class DeviceTrie:
    """One TokenTrie's arrays as torch tensors on a device, with the lookups the constraint needs."""

    def __init__(self, trie: TokenTrie, device: torch.device | str):
        dev = torch.device(device)
        self.vocab_size = int(trie.vocab_size)
        self.n_nodes = int(trie.n_nodes)
        self.max_degree = int(trie.max_degree)
        token = np.asarray(trie.child_token).astype(np.int64)
        self.n_edges = int(token.shape[0])
        # an empty trie still gets one (never matched) edge so that every gather has a valid index
        self.child_token = torch.from_numpy(token if token.size else np.full(1, -1, np.int64)).to(dev)
        self.child_start = torch.from_numpy(np.asarray(trie.child_start).astype(np.int64)).to(dev)
        self.terminal_bits = torch.from_numpy(np.asarray(trie.terminal_bits).astype(np.int64)).to(dev)
        self.root_child = torch.from_numpy(np.asarray(trie.root_child).astype(np.int64)).to(dev)
        self.rounds = max(1, math.ceil(math.log2(self.max_degree + 1)) + 1)
        self.degree_range = torch.arange(max(self.max_degree, 1), device=dev)

    def ranges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge range [lo, hi) of each node (int64, any shape); nodes < 0 or past the stored starts: empty."""
        k = self.child_start.shape[0] - 1
        inside = (nodes >= 0) & (nodes < k)
        safe = torch.where(inside, nodes, 0)
        zero = torch.zeros((), dtype=torch.int64, device=nodes.device)
        return torch.where(inside, self.child_start[safe], zero), torch.where(inside, self.child_start[safe + 1], zero)

    def child(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child reached from each node by each token, -1 if none (nodes < 0 give -1). int64 [rows]."""
        in_vocab = (tokens >= 0) & (tokens < self.vocab_size)
        root = self.root_child[tokens.clamp(0, self.vocab_size - 1)]
        lo, hi = self.ranges(nodes)
        end = hi
        last = self.child_token.shape[0] - 1
        for _ in range(self.rounds):  # fixed rounds: no data-dependent exit, no sync
            active = lo < hi
            mid = (lo + hi) >> 1
            t = self.child_token[mid.clamp(max=last)]
            right = active & (t < tokens)
            lo = torch.where(right, mid + 1, lo)
            hi = torch.where(active & ~right, mid, hi)
        found = (lo < end) & (self.child_token[lo.clamp(max=last)] == tokens)
        inner = torch.where(found, lo + 1, -1)
        out = torch.where(nodes == 0, root, torch.where(nodes > 0, inner, -1))
        return torch.where(in_vocab, out, -1)

    def is_terminal(self, nodes: torch.Tensor) -> torch.Tensor:
        ok = (nodes >= 0) & (nodes < self.n_nodes)
        safe = torch.where(ok, nodes, 0)
        return ok & (((self.terminal_bits[safe >> 3] >> (safe & 7)) & 1) == 1)

    def edges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The edges out of each node as a dense block: tokens, children, valid; each int64/bool [rows, max_degree].
        Only for nodes > 0 (the root has its dense table)."""
        lo, hi = self.ranges(nodes)
        pos = lo[:, None] + self.degree_range[None, :]
        valid = (nodes[:, None] > 0) & (pos < hi[:, None])
        pos = pos.clamp(max=self.child_token.shape[0] - 1)
        return self.child_token[pos], pos + 1, valid


class DeviceTrieState:
    """The constraint's grammar over device tensors: initial state, one-token advance, allowed-token masks.

    State is (phase int64 [rows], nodes int64 [rows, segments]); `q` int64 [rows] is each row's query (index into
    the per-query filters; zeros without per-query lists).

    Args:
        tries: the index's segment tries (base, delta).
        filter_keys: per segment (sorted node keys q * n_nodes + node, sorted end keys, allow flag per query), as
            built by TrieConstraint; None without filters.
        root_allowed: bool [n_queries or 1, width] numpy mask of the root (shared with the numpy backend).
        span, end, eos, start: the grammar (see TrieConstraint).
    """

    def __init__(self, tries: Sequence[TokenTrie], filter_keys: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
                 *, span: bool, end: int, eos: int, start: int, floor: float, device: torch.device | str):
        self.device = torch.device(device)
        self.tries = [DeviceTrie(t, self.device) for t in tries]
        self.keys = None if filter_keys is None else [
            tuple(torch.from_numpy(np.asarray(a)).to(self.device) for a in k) for k in filter_keys]
        self.span, self.end, self.eos, self.start, self.floor = span, int(end), int(eos), int(start), float(floor)
        self._root: dict[int, torch.Tensor] = {}

    def set_root(self, width: int, allowed: np.ndarray) -> None:
        self._root[width] = torch.from_numpy(allowed).to(self.device)

    def has_root(self, width: int) -> bool:
        return width in self._root

    # --- state ---------------------------------------------------------------------------------------------------

    def initial(self, last_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """State at the prompt end for rows whose prompt ends with last_prompt (int64 [rows])."""
        rows = last_prompt.shape[0]
        s = len(self.tries)
        if not self.span:
            return (torch.full((rows,), IN, dtype=torch.int64, device=self.device),
                    torch.zeros((rows, s), dtype=torch.int64, device=self.device))
        opened = last_prompt == self.start  # the prompt opened a span: inside, at the root
        phase = torch.where(opened, IN, OUT)
        nodes = torch.where(opened[:, None], 0, torch.full((rows, s), -1, dtype=torch.int64, device=self.device))
        return phase, nodes

    def _listed(self, keys: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if keys.shape[0] == 0:
            return torch.zeros(k.shape, dtype=torch.bool, device=k.device)
        pos = torch.searchsorted(keys, k.contiguous()).clamp(max=keys.shape[0] - 1)
        return keys[pos] == k

    def edge_ok(self, s: int, q: torch.Tensor, child: torch.Tensor) -> torch.Tensor:
        ok = child >= 0
        if self.keys is None:
            return ok
        nodes, _, allow_q = self.keys[s]
        return ok & (self._listed(nodes, q * self.tries[s].n_nodes + child) == allow_q[q])

    def end_ok(self, s: int, q: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        ok = self.tries[s].is_terminal(node)
        if self.keys is None:
            return ok
        _, ends, allow_q = self.keys[s]
        return ok & (self._listed(ends, q * self.tries[s].n_nodes + node) == allow_q[q])

    def advance(self, phase: torch.Tensor, nodes: torch.Tensor, tok: torch.Tensor,
                q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """State after one more token per row (all rows at once; rows not inside an item keep their node)."""
        inside = phase == IN
        ended = torch.zeros_like(inside)
        alive = torch.zeros_like(inside)
        new_nodes = []
        for s, trie in enumerate(self.tries):  # at most 2 segments (base, delta): not a per-row loop
            cur = nodes[:, s]
            ended = ended | ((tok == self.end) & self.end_ok(s, q, cur))
            child = trie.child(cur, tok)
            child = torch.where(self.edge_ok(s, q, child), child, -1)
            new_nodes.append(child)
            alive = alive | (child >= 0)
        ended &= inside
        child = torch.stack(new_nodes, dim=1)
        after_end = OUT if self.span else DONE
        new_phase = torch.where(inside, torch.where(ended, after_end, torch.where(alive, IN, DEAD)), phase)
        new_nodes_t = torch.where(inside[:, None], torch.where((ended | ~alive)[:, None], -1, child), nodes)
        if self.span:
            out = phase == OUT  # rows outside before this token
            opening = out & (tok == self.start)
            new_phase = torch.where(opening, IN, torch.where(out & (tok == self.eos), DONE, new_phase))
            new_nodes_t = torch.where(opening[:, None], 0, new_nodes_t)
        return new_phase, new_nodes_t

    # --- masks ---------------------------------------------------------------------------------------------------

    def allowed(self, phase: torch.Tensor, nodes: torch.Tensor, q: torch.Tensor, width: int) -> torch.Tensor:
        """bool [rows, width]: the tokens each row may emit next."""
        rows = phase.shape[0]
        allowed = torch.zeros((rows, width + 1), dtype=torch.bool, device=self.device)  # last column: a sink
        inside = phase == IN
        at_root = inside & (nodes[:, 0] == 0)  # the root is (0, 0, ...) in every segment
        root = self._root[width]
        root_rows = root[q if root.shape[0] > 1 else torch.zeros_like(q)]
        allowed[:, :width] = root_rows & at_root[:, None]
        inner = inside & ~at_root
        end_col = torch.zeros(rows, dtype=torch.bool, device=self.device)
        for s, trie in enumerate(self.tries):
            cur = torch.where(inner, nodes[:, s], -1)
            tok, child, valid = trie.edges(cur)
            valid = valid & self.edge_ok(s, q[:, None].expand_as(child), child)
            allowed.scatter_(1, torch.where(valid, tok, width), True)
            end_col = end_col | (inner & self.end_ok(s, q, cur))
        allowed = allowed[:, :width]
        allowed[:, self.end] |= end_col
        if self.span:  # free text: anything but a closing marker
            out = phase == OUT
            allowed |= out[:, None]
            allowed[:, self.end] &= ~out | end_col
        # finished or dead rows may only emit EOS, with a finite score (never an empty row)
        allowed[:, self.eos] |= (phase == DONE) | (phase == DEAD)
        return allowed

    def allowed_pairs(self, phase: torch.Tensor, nodes: torch.Tensor, q: torch.Tensor,
                      width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same tokens as `allowed` (whole mode only), as sparse (row, token) pairs, int64 [pairs] each, sorted
        by row then token: inside a title a row allows a handful of tokens, so a beam search over these pairs never
        touches a [rows, width] matrix except at the root."""
        assert not self.span, "sparse allowed pairs are for whole-mode indexes"
        inside = phase == IN
        at_root = inside & (nodes[:, 0] == 0)
        root = self._root[width]
        r_rows = at_root.nonzero()[:, 0]
        rq = q[r_rows] if root.shape[0] > 1 else torch.zeros_like(r_rows)
        i, tok = root[rq].nonzero(as_tuple=True)
        rows, toks = [r_rows[i]], [tok]
        inner = inside & ~at_root
        for s, trie in enumerate(self.tries):
            cur = torch.where(inner, nodes[:, s], -1)
            etok, child, valid = trie.edges(cur)
            valid = valid & self.edge_ok(s, q[:, None].expand_as(child), child)
            r, j = valid.nonzero(as_tuple=True)
            rows += [r, (inner & self.end_ok(s, q, cur)).nonzero()[:, 0]]
            toks += [etok[r, j], None]
        finished = ((phase == DONE) | (phase == DEAD)).nonzero()[:, 0]
        rows.append(finished)
        toks.append(None)
        toks = [torch.full_like(r, self.end if k < len(toks) - 1 else self.eos) if t is None else t
                for k, (r, t) in enumerate(zip(rows, toks))]
        key = torch.unique(torch.cat(rows) * width + torch.cat(toks))  # sorted; a token listed twice counts once
        return key // width, key % width

    def mask(self, scores: torch.Tensor, phase: torch.Tensor, nodes: torch.Tensor, q: torch.Tensor,
             *, inplace: bool = True, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Scores with disallowed tokens at -inf; allowed tokens' NaN / -inf / scores below the floor become the
        floor (transformers#22890), so an allowed token can always be picked. `allowed`: this state's
        `allowed(...)` when the caller already has it."""
        if allowed is None:
            allowed = self.allowed(phase, nodes, q, scores.shape[1])
        out = scores if inplace else scores.clone()
        out.nan_to_num_(nan=self.floor, neginf=self.floor).clamp_min_(self.floor)
        return out.masked_fill_(~allowed, -float("inf"))
