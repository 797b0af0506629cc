"""A compact, vectorized trie over token-id sequences (STATIC-style flat arrays, no nested dicts).

Layout (all flat numpy arrays, saved with safetensors and loaded memory-mapped):

  nodes       numbered breadth-first: root = 0, then every depth-1 node in lexicographic order, then depth 2, ...
  child_token uint16 (int32 when the vocabulary is >= 65535) [n_nodes - 1]: the token on the edge into node e + 1.
              Because nodes are numbered breadth-first and every non-root node has exactly one incoming edge,
              edge e leads to node e + 1: child ids are implicit, nothing else is stored per edge.
  child_start int32/int64 [k + 1]: the edges of node n are child_token[child_start[n]:child_start[n + 1]], sorted by
              token. Trailing nodes without children (the deepest level) are left out: for n >= k the range is empty.
  terminal    packed bits [ceil(n_nodes / 8)]: an item ends at node n (the end token is allowed there). An id that is a
              prefix of another id gives a node that is terminal and has children: it may end or continue.
  rank_block  int64 [n_nodes / 256 + 1]: terminals before each 256-node block, so rank(node) is O(1).
              The index row of an item is the rank of its terminal node: no per-item table is stored.

The root, which has up to |V| children, gets a dense transition table (`root_child`, int32 [V]) and a dense
allowed-token mask computed at load time, so the root step is one row lookup (STATIC, Su et al. 2026). Deeper nodes use
a vectorized binary search inside their CSR range: every operation is over all rows at once.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors.numpy import save_file

from dlsearch.data.files import atomic_path

TRIE_FORMAT_VERSION = 1
_BLOCK = 256  # nodes per rank block: 256 bits = 32 bytes, popcount over at most 32 bytes per lookup
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


class TrieError(ValueError):
    """Bad input to the trie builder (duplicate sequences, empty sequences, tokens outside the vocabulary)."""


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max else np.dtype(np.int32)


@dataclass
class TokenTrie:
    """Immutable flat trie. Build with `build_trie`, save with `save`, load with `TokenTrie.load` (memory-mapped)."""

    child_token: np.ndarray  # uint16|int32 [n_nodes - 1]
    child_start: np.ndarray  # int32|int64 [k + 1]
    terminal_bits: np.ndarray  # uint8 [ceil(n_nodes / 8)]
    rank_block: np.ndarray  # int64 [n_nodes // 256 + 1]
    level_start: np.ndarray  # int64 [max_depth + 2]: first node id of each depth, then n_nodes
    vocab_size: int
    max_degree: int  # largest child count below the root: bounds the binary search
    _root_child: np.ndarray | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- sizes ---------------------------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return int(self.child_token.shape[0]) + 1

    @property
    def n_items(self) -> int:
        return int(self.rank_block[-1])

    @property
    def max_depth(self) -> int:
        return int(self.level_start.shape[0]) - 2

    def nbytes(self) -> int:
        """Bytes of the stored arrays (what the index costs in memory / on disk), root table included."""
        arrays = (self.child_token, self.child_start, self.terminal_bits, self.rank_block, self.level_start)
        return int(sum(a.nbytes for a in arrays)) + int(self.root_child.nbytes)

    # --- lookups (all vectorized over rows) ---------------------------------------------------------------------

    @property
    def root_child(self) -> np.ndarray:
        """Dense root transition table, int32 [vocab]: child node of the root for each token, -1 if none."""
        if self._root_child is None:
            rc = np.full(self.vocab_size, -1, dtype=np.int32)
            lo, hi = self._ranges(np.zeros(1, dtype=np.int64))
            toks = np.asarray(self.child_token[lo[0]:hi[0]], dtype=np.int64)
            rc[toks] = np.arange(lo[0], hi[0], dtype=np.int32) + 1
            self._root_child = rc
        return self._root_child

    def _ranges(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge range [lo, hi) of each node; nodes past the stored starts have no children."""
        k = self.child_start.shape[0] - 1
        inside = nodes < k
        safe = np.where(inside, nodes, 0)
        lo = np.where(inside, self.child_start[safe], 0).astype(np.int64)
        hi = np.where(inside, self.child_start[safe + 1], 0).astype(np.int64)
        return lo, hi

    def child(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Child node reached from each node by each token, or -1. nodes, tokens: int64 [rows]."""
        nodes = np.asarray(nodes, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        out = np.full(nodes.shape, -1, dtype=np.int64)
        in_vocab = (tokens >= 0) & (tokens < self.vocab_size)
        at_root = (nodes == 0) & in_vocab
        if at_root.any():
            out[at_root] = self.root_child[tokens[at_root]]
        inner = (nodes > 0) & in_vocab
        if inner.any():
            out[inner] = self._search(nodes[inner], tokens[inner])
        return out

    def _search(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Binary search of tokens in each node's sorted edge range, all rows in lockstep."""
        lo, hi = self._ranges(nodes)
        end = hi.copy()
        n_edges = self.child_token.shape[0]
        if n_edges == 0:
            return np.full(nodes.shape, -1, dtype=np.int64)
        for _ in range(max(1, math.ceil(math.log2(self.max_degree + 1)) + 1)):
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) >> 1
            t = self.child_token[np.minimum(mid, n_edges - 1)].astype(np.int64)
            right = active & (t < tokens)
            left = active & ~right
            lo = np.where(right, mid + 1, lo)
            hi = np.where(left, mid, hi)
        found = lo < end
        found &= self.child_token[np.minimum(lo, n_edges - 1)].astype(np.int64) == tokens
        return np.where(found, lo + 1, -1)

    def is_terminal(self, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes, dtype=np.int64)
        ok = (nodes >= 0) & (nodes < self.n_nodes)
        safe = np.where(ok, nodes, 0)
        bit = (self.terminal_bits[safe >> 3] >> (safe & 7).astype(np.uint8)) & 1
        return ok & (bit == 1)

    def rank(self, nodes: np.ndarray) -> np.ndarray:
        """Number of terminal nodes before each node: for a terminal node, the index row of its item."""
        nodes = np.asarray(nodes, dtype=np.int64)
        block = nodes // _BLOCK
        base = self.rank_block[block].astype(np.int64)
        first_byte = block * (_BLOCK // 8)
        n_full = (nodes - block * _BLOCK) >> 3  # whole bytes of this block before the node
        offs = np.arange(_BLOCK // 8, dtype=np.int64)
        idx = np.minimum(first_byte[:, None] + offs[None, :], self.terminal_bits.shape[0] - 1)
        bytes_ = np.asarray(self.terminal_bits[idx], dtype=np.int64)
        full = np.where(offs[None, :] < n_full[:, None], _POPCOUNT[bytes_], 0).sum(axis=1)
        last = np.asarray(self.terminal_bits[np.minimum(nodes >> 3, self.terminal_bits.shape[0] - 1)], dtype=np.int64)
        part = _POPCOUNT[last & ((1 << (nodes & 7)) - 1)]
        return base + full + part

    def item_of(self, nodes: np.ndarray) -> np.ndarray:
        """Index row of the item ending at each node, -1 where the node is not terminal."""
        nodes = np.asarray(nodes, dtype=np.int64)
        term = self.is_terminal(nodes)
        out = np.full(nodes.shape, -1, dtype=np.int64)
        if term.any():
            out[term] = self.rank(nodes[term])
        return out

    def allowed_edges(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (row, token, child) triples allowed from each row's node (CSR expand, no per-row loop).

        Returns row indices int64 [E], tokens int64 [E], child nodes int64 [E]."""
        nodes = np.asarray(nodes, dtype=np.int64)
        lo, hi = self._ranges(nodes)
        deg = hi - lo
        total = int(deg.sum())
        if total == 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z
        rows = np.repeat(np.arange(nodes.shape[0], dtype=np.int64), deg)
        first = np.repeat(lo - (np.cumsum(deg) - deg), deg)  # edge index = lo + position inside the row's run
        edges = first + np.arange(total, dtype=np.int64)
        return rows, self.child_token[edges].astype(np.int64), edges + 1

    # --- whole-structure helpers (filters, deltas, merges) -------------------------------------------------------

    def terminal_nodes(self) -> np.ndarray:
        """Node id of every terminal in rank order (= index row order), int64 [n_items]. Cached."""
        if "terminal_nodes" not in self._cache:
            bits = np.unpackbits(np.asarray(self.terminal_bits), bitorder="little")[: self.n_nodes]
            self._cache["terminal_nodes"] = np.flatnonzero(bits).astype(np.int64)
        return self._cache["terminal_nodes"]

    def parent(self, nodes: np.ndarray) -> np.ndarray:
        """Parent of each non-root node (the node whose edge range holds edge node - 1).

        The needles take child_start's dtype: searching an int32 array with int64 values makes numpy convert the whole
        array on every call (20M entries at 10M items)."""
        starts = self.child_start
        needles = (np.asarray(nodes, dtype=np.int64) - 1).astype(starts.dtype)
        return np.searchsorted(starts, needles, side="right").astype(np.int64) - 1

    def select(self, rows: np.ndarray) -> np.ndarray:
        """Terminal node of each index row (inverse of `rank`): a search in rank_block, then popcounts inside one
        256-node block. int64 [k]; no whole-trie pass."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_items):
            raise IndexError(f"item rows must lie in [0, {self.n_items})")
        block = np.searchsorted(self.rank_block, rows, side="right").astype(np.int64) - 1
        need = rows - np.asarray(self.rank_block[block], dtype=np.int64)  # terminals to skip inside the block
        offs = np.arange(_BLOCK // 8, dtype=np.int64)
        idx = np.minimum(block[:, None] * (_BLOCK // 8) + offs[None, :], self.terminal_bits.shape[0] - 1)
        bytes_ = np.asarray(self.terminal_bits[idx], dtype=np.int64)  # [k, 32]
        cum = np.cumsum(_POPCOUNT[bytes_], axis=1)
        byte_i = (cum <= need[:, None]).sum(axis=1)  # the byte holding the wanted terminal
        before = np.where(byte_i > 0, cum[np.arange(rows.shape[0]), np.maximum(byte_i - 1, 0)], 0)
        b = bytes_[np.arange(rows.shape[0]), byte_i]
        k = need - before  # wanted set bit (0-based) inside byte b
        bits = (b[:, None] >> np.arange(8)[None, :]) & 1
        bit_i = ((np.cumsum(bits, axis=1) <= k[:, None]).sum(axis=1))
        return block * _BLOCK + byte_i * 8 + bit_i

    def subtree_counts(self, nodes: np.ndarray) -> np.ndarray:
        """Items ending in each given node's subtree, int64 [k]. Breadth-first numbering makes a subtree one
        contiguous node range per level, so the count is rank differences over at most max_depth ranges."""
        lo = np.asarray(nodes, dtype=np.int64)
        hi = lo + 1
        k = self.child_start.shape[0] - 1
        n = self.n_nodes
        total = np.zeros(lo.shape, dtype=np.int64)
        for _ in range(self.max_depth + 1):
            live = lo < hi
            if not live.any():
                break
            total += np.where(live, self._rank_upto(hi) - self._rank_upto(lo), 0)
            # children of the nodes [lo, hi) are the edges [child_start[lo], child_start[hi]) = nodes +1
            lo = np.where(live, np.asarray(self.child_start[np.minimum(lo, k)], dtype=np.int64) + 1, n)
            hi = np.where(live, np.asarray(self.child_start[np.minimum(hi, k)], dtype=np.int64) + 1, n)
        return total

    def _rank_upto(self, nodes: np.ndarray) -> np.ndarray:
        """Terminals among nodes [0, node) for node in [0, n_nodes]."""
        nodes = np.asarray(nodes, dtype=np.int64)
        at_end = nodes >= self.n_nodes
        out = np.where(at_end, self.n_items, 0)
        inside = ~at_end
        if inside.any():
            out[inside] = self.rank(nodes[inside])
        return out

    def subtree_items(self) -> np.ndarray:
        """Items ending in each node's subtree, int64 [n_nodes]. Cached; built bottom-up level by level."""
        if "subtree_items" not in self._cache:
            self._cache["subtree_items"] = self.subtree_counts(np.arange(self.n_nodes, dtype=np.int64))
        return self._cache["subtree_items"]

    def sequences(self, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
        """Every item's token sequence (without end token) in index-row order: tokens [n, max_depth] of `dtype`
        (int32 halves a compaction's copy at 100M items) padded with -1, lengths int64 [n]. Used to merge deltas and
        to rebuild."""
        term = self.terminal_nodes()
        depth = np.searchsorted(np.asarray(self.level_start), term, side="right") - 1
        out = np.full((term.shape[0], max(self.max_depth, 1)), -1, dtype=dtype)
        cur = term.copy()
        pos = depth - 1
        for _ in range(self.max_depth):
            live = cur > 0
            if not live.any():
                break
            out[np.flatnonzero(live), pos[live]] = self.child_token[cur[live] - 1]
            cur[live] = self.parent(cur[live])
            pos[live] -= 1
        return out, depth.astype(np.int64)

    def path_nodes(self, item_rows: np.ndarray) -> np.ndarray:
        """Every node on the root-to-terminal paths of the given items (root excluded), unique, sorted."""
        cur = self.select(item_rows)
        seen = [cur]
        for _ in range(self.max_depth):
            cur = cur[cur > 0]
            cur = self.parent(cur)
            cur = cur[cur > 0]
            if cur.size == 0:
                break
            seen.append(cur)
        return np.unique(np.concatenate(seen))

    # --- persistence ----------------------------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "child_token": np.ascontiguousarray(self.child_token),
            "child_start": np.ascontiguousarray(self.child_start),
            "terminal_bits": np.ascontiguousarray(self.terminal_bits),
            "rank_block": np.ascontiguousarray(self.rank_block),
            "level_start": np.ascontiguousarray(self.level_start),
        }

    def meta(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "max_degree": self.max_degree, "n_nodes": self.n_nodes,
                "n_items": self.n_items, "max_depth": self.max_depth}

    def save(self, path: str | Path, extra: dict[str, np.ndarray] | None = None) -> dict[str, str]:
        """Write the arrays (plus `extra` arrays, e.g. item ids) to one safetensors file; returns their digests."""
        return save_arrays(path, {**self.arrays(), **(extra or {})}, {k: str(v) for k, v in self.meta().items()})

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True) -> "TokenTrie":
        """Load a trie saved by `save`; with mmap the arrays are numpy memmaps over the file (no copy)."""
        arrays, meta = read_safetensors(path, mmap=mmap)
        return cls.from_arrays(arrays, meta, path)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, str], path: str | Path) -> "TokenTrie":
        """Assemble a trie from a file's arrays after checking that their sizes agree with each other (cheap)."""
        missing = {"child_token", "child_start", "terminal_bits", "rank_block", "level_start"} - set(arrays)
        if missing:
            raise TrieError(f"{path}: not a trie file, missing arrays {sorted(missing)}")
        try:
            trie = cls(arrays["child_token"], arrays["child_start"], arrays["terminal_bits"], arrays["rank_block"],
                       arrays["level_start"], vocab_size=int(meta["vocab_size"]), max_degree=int(meta["max_degree"]))
        except (KeyError, ValueError) as e:
            raise TrieError(f"{path}: trie metadata lacks or mangles vocab_size/max_degree ({e})") from None
        n = trie.n_nodes
        problems = []
        if trie.terminal_bits.shape != ((n + 7) // 8,):
            problems.append(f"terminal_bits has {trie.terminal_bits.shape} bytes for {n} nodes")
        if trie.rank_block.shape != (-(-n // _BLOCK) + 1,):
            problems.append(f"rank_block has shape {trie.rank_block.shape} for {n} nodes")
        if trie.level_start.ndim != 1 or trie.level_start.shape[0] < 2 or int(trie.level_start[-1]) != n:
            problems.append(f"level_start does not end at n_nodes {n}")
        if trie.child_start.ndim != 1 or trie.child_start.shape[0] < 1 or int(trie.child_start[-1]) != n - 1:
            problems.append(f"child_start does not end at the edge count {n - 1}")
        if "n_nodes" in meta and int(meta["n_nodes"]) != n:
            problems.append(f"metadata says {meta['n_nodes']} nodes, the arrays hold {n}")
        if problems:
            raise TrieError(f"{path}: damaged trie: " + "; ".join(problems))
        return trie


_ST_DTYPES = {"U8": np.uint8, "U16": np.uint16, "I32": np.int32, "I64": np.int64, "U32": np.uint32, "F32": np.float32,
              "BOOL": np.bool_, "I16": np.int16, "U64": np.uint64, "F64": np.float64, "I8": np.int8}
_MAX_HEADER = 100 * 2**20  # safetensors itself refuses headers above 100 MB


def array_digest(a: np.ndarray, algo: str = "") -> str:
    """Content digest of one array's bytes, as "algo:hex". xxh3_128 when xxhash is installed (~15 GB/s), else sha256
    (~0.5 GB/s here)."""
    algo = algo or DIGEST
    buf = memoryview(np.ascontiguousarray(a)).cast("B")
    if algo == "xxh3_128":
        import xxhash

        return "xxh3_128:" + xxhash.xxh3_128(buf).hexdigest()
    if algo == "sha256":
        import hashlib

        return "sha256:" + hashlib.sha256(buf).hexdigest()
    raise TrieError(f"unknown digest algorithm {algo!r}")


def _default_digest() -> str:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "sha256"
    return "xxh3_128"


DIGEST = _default_digest()


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> dict[str, str]:
    """Write arrays to a safetensors file atomically (temp file, then rename); returns {name: digest}."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    return {k: array_digest(v) for k, v in arrays.items()}


def verify_arrays(path: str | Path, arrays: dict[str, np.ndarray], digests: dict[str, str]) -> None:
    """Compare every array with the digest the manifest recorded; raise TrieError naming the file and array."""
    if set(arrays) != set(digests):
        raise TrieError(f"{path}: holds arrays {sorted(arrays)}, the manifest lists {sorted(digests)}")
    for name, want in digests.items():
        got = array_digest(arrays[name], str(want).split(":", 1)[0])
        if got != want:
            raise TrieError(f"{path}: array {name!r} fails its checksum (damaged, or not the array this manifest "
                            "describes); rebuild the index or restore the file")


def read_safetensors(path: str | Path, *, mmap: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file as numpy arrays, memory-mapped when mmap (the format is an 8-byte little-endian
    header length, a JSON header with dtype/shape/data_offsets, then the raw little-endian data).

    Every size is checked against the file before mapping: a damaged or truncated file raises TrieError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise TrieError(f"{path}: truncated: {size} bytes, not even a safetensors header length")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER):
                raise TrieError(f"{path}: header length {n} exceeds the file ({size} bytes): damaged or truncated")
            header = json.loads(f.read(n))
    except OSError as e:
        raise TrieError(f"{path}: cannot read safetensors file: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrieError(f"{path}: damaged safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise TrieError(f"{path}: damaged safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", {}) or {}
    data_size = size - 8 - n
    arrays: dict[str, np.ndarray] = {}
    end_max = 0
    for name, info in header.items():
        try:
            dtype = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise TrieError(f"{path}: damaged header entry for array {name!r} ({e!r})") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if min(shape, default=0) < 0 or start < 0 or end - start != count * dtype.itemsize:
            raise TrieError(f"{path}: array {name!r}: shape {shape} x {dtype} does not match its byte range "
                            f"[{start}, {end})")
        if end > data_size:
            raise TrieError(f"{path}: truncated: array {name!r} needs bytes up to {end}, the file holds {data_size} "
                            "after its header")
        end_max = max(end_max, end)
        if count == 0:
            arrays[name] = np.zeros(shape, dtype=dtype)
        elif mmap:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + start, shape=shape)
        else:
            with open(path, "rb") as f:
                f.seek(8 + n + start)
                arrays[name] = np.frombuffer(f.read(end - start), dtype=dtype).reshape(shape)
    if end_max != data_size:
        raise TrieError(f"{path}: {data_size} data bytes after the header, the arrays cover {end_max}: damaged")
    return arrays, meta


# --- building -------------------------------------------------------------------------------------------------------

def pad_sequences(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token lists -> (tokens int64 [n, max_len] padded with -1, lengths int64 [n])."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max()) if len(seqs) else 0
    out = np.full((len(seqs), max(width, 1)), -1, dtype=np.int64)
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(seqs)), lengths)
    cols = np.arange(flat.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = flat
    return out, lengths


_ROWS = 1 << 22  # rows per chunk when packing keys or checking tokens: bounds temporaries to tens of MB


def _check_tokens(tokens: np.ndarray, lengths: np.ndarray, vocab_size: int) -> None:
    """Every token inside its sequence's length lies in [0, vocab_size) (chunked: no [n, width] mask at 100M ids)."""
    cols = np.arange(tokens.shape[1])[None, :]
    for lo in range(0, tokens.shape[0], _ROWS):
        t = tokens[lo:lo + _ROWS]
        inside = cols < lengths[lo:lo + _ROWS, None]
        bad = inside & ((t < 0) | (t >= vocab_size))
        if bad.any():
            vals = t[inside]
            raise TrieError(f"token ids must lie in [0, {vocab_size}); got {int(vals.min())}..{int(vals.max())}")


def _packed_bits(width: int, vocab_size: int) -> int:
    """Bits per token when a whole row fits one uint64 key (digit = token + 1, 0 = padding), else 0."""
    bits = int(vocab_size).bit_length()
    return bits if width * bits <= 64 else 0


def _sorted_rows(tokens: np.ndarray, lengths: np.ndarray, vocab_size: int):
    """Sort the rows lexicographically (padding first, so a prefix precedes its extensions).

    Returns (order, column): order [n] lists input rows in sorted order (int32 below 2^31 rows); column(d) gives the
    sorted rows' token at depth d (1-based) as int32 (int64 for huge vocabularies), -1 past a row's length.

    When a row fits one uint64 key (vocab 32k: 15 bits x 4 tokens) the key is sorted alone and the columns are read
    back from the sorted key: no [n, width] copy of the tokens exists (16 bytes per item at width 4)."""
    n, width = tokens.shape
    row_dtype = np.int32 if n < 2**31 - 1 else np.int64
    bits = _packed_bits(width, vocab_size)
    if bits:
        key = np.zeros(n, dtype=np.uint64)
        for lo in range(0, n, _ROWS):  # chunked packing: temporaries stay per chunk
            k = key[lo:lo + _ROWS]
            ln = lengths[lo:lo + _ROWS]
            for j in range(width):
                k <<= np.uint64(bits)
                k |= np.where(j < ln, tokens[lo:lo + _ROWS, j].astype(np.int64) + 1, 0).astype(np.uint64)
        order = np.argsort(key)  # keys of distinct rows differ, so stability is not needed (duplicates are refused)
        key = key[order]
        order = order.astype(row_dtype)
        mask = np.uint64((1 << bits) - 1)

        def column(d: int) -> np.ndarray:
            col = key >> np.uint64(bits * (width - d))
            col &= mask
            out = col.astype(np.int32 if bits < 31 else np.int64)
            out -= 1
            return out
        return order, column
    valid = np.arange(width)[None, :] < lengths[:, None]
    padded = np.where(valid, tokens, -1).astype(np.int32 if vocab_size < 2**31 - 1 else np.int64, copy=False)
    del valid
    order = np.lexsort(padded.T[::-1]).astype(row_dtype)
    srt = padded[order]
    del padded
    return order, lambda d: srt[:, d - 1]


def build_trie(tokens: np.ndarray, lengths: np.ndarray, vocab_size: int,
               *, item_names: Sequence[str] | None = None) -> tuple[TokenTrie, np.ndarray]:
    """Build the flat trie from padded token sequences by one sort and one pass per depth (no Python per item).

    Memory: beyond the inputs, about 60 bytes per 4-token item at the peak (sorted key, row order, per-row node ids,
    the arrays being built); every [n]-sized temporary is int32 / bool where the sizes allow.

    Args:
        tokens: int [n, max_len], padded after each sequence's length (pad values are ignored). Sequences exclude the
            end token.
        lengths: int [n], each >= 1.
        vocab_size: tokens must lie in [0, vocab_size).
        item_names: optional names for error messages (duplicates).

    Returns:
        (trie, order): order int32 (int64 from 2^31 items) [n] lists input positions in index-row order (index row
        r = item order[r]).

    Raises:
        TrieError: empty sequences, tokens outside the vocabulary, or two items with the same token sequence.
    """
    tokens = np.asarray(tokens)
    lengths = np.asarray(lengths)
    n = tokens.shape[0]
    if n == 0:
        raise TrieError("cannot build a trie of zero items")
    if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
        raise TrieError(f"lengths must be integers of shape ({n},), got {lengths.dtype} {lengths.shape}")
    if lengths.min() < 1:
        bad = int(np.argmin(lengths))
        raise TrieError(f"item {_name(item_names, bad)} has an empty token sequence")
    width = tokens.shape[1]
    if lengths.max() > width:
        raise TrieError(f"a length of {int(lengths.max())} exceeds the {width} token columns")
    _check_tokens(tokens, lengths, vocab_size)

    order, column = _sorted_rows(tokens, lengths, vocab_size)
    lens = lengths.astype(np.uint8 if width < 256 else np.int64)[order]
    # node ids fit int32 below 2^31 nodes (n * width bounds them): half the memory of the per-row arrays
    node_dtype = np.dtype(np.int32) if n * max(width, 1) < 2**31 - 2 else np.dtype(np.int64)
    start_dtype = node_dtype
    tok_dtype = _token_dtype(vocab_size)

    differs = np.zeros(n, dtype=bool)  # row r's prefix (through the current depth) differs from row r - 1's
    differs[0] = True
    row_node = np.zeros(n, dtype=node_dtype)  # each row's node at the previous depth (root at depth 0), -1 past it
    level_start = [0, 1]
    edge_tokens: list[np.ndarray] = []
    starts_of: list[np.ndarray] = []  # child_start[1:] for the nodes of each depth that has children (root first)
    terminal_nodes: list[np.ndarray] = []
    terminal_rows: list[np.ndarray] = []
    offset = 1
    last_parent = 0
    for d in range(1, width + 1):
        col = column(d)
        differs[1:] |= col[1:] != col[:-1]
        live = lens >= d
        starts = differs & live
        count = int(np.count_nonzero(starts))
        if count == 0:
            break
        parents = row_node[starts]
        prev_lo, prev_hi = level_start[-2], level_start[-1]
        # sorted rows make each node's children consecutive: inclusive cumulative child counts are its edge ends
        ends_here = np.bincount(parents - prev_lo, minlength=prev_hi - prev_lo).astype(start_dtype)
        np.cumsum(ends_here, out=ends_here)
        ends_here += offset - 1
        starts_of.append(ends_here)
        last_parent = int(parents[-1])
        del parents, ends_here
        edge_tokens.append(col[starts].astype(tok_dtype))
        del col
        ids = np.cumsum(starts, dtype=node_dtype)
        ids += offset - 1
        ends = lens == d
        dup = ends & ~starts
        if dup.any():
            r = int(np.flatnonzero(dup)[0])
            raise TrieError(f"items {_name(item_names, int(order[r - 1]))} and {_name(item_names, int(order[r]))} "
                            "have the same token sequence; ids must tokenize differently")
        del dup, starts
        terminal_nodes.append(ids[ends])
        terminal_rows.append(order[ends])
        del ends
        ids[~live] = -1
        row_node = ids
        del ids, live
        offset += count
        level_start.append(offset)
    n_nodes = offset
    del column, lens, row_node, differs, order
    # nodes after the last one with children keep an implicit empty range (see the module docstring)
    child_start = np.concatenate([np.zeros(1, dtype=start_dtype)] + starts_of)[:last_parent + 2]
    del starts_of
    max_degree = int(np.diff(child_start[1:]).max()) if child_start.shape[0] > 2 else 0
    child_token = np.concatenate(edge_tokens)
    del edge_tokens

    term = np.concatenate(terminal_nodes)
    del terminal_nodes
    bits = np.zeros(n_nodes, dtype=bool)
    bits[term] = True
    del term
    packed = np.packbits(bits, bitorder="little")
    per_block = np.add.reduceat(bits, np.arange(0, n_nodes, _BLOCK)) if n_nodes else np.zeros(0, dtype=np.int64)
    del bits
    rank_block = np.zeros(per_block.shape[0] + 1, dtype=np.int64)
    np.cumsum(per_block, out=rank_block[1:])
    trie = TokenTrie(child_token, child_start, packed, rank_block, np.array(level_start, dtype=np.int64),
                     vocab_size=int(vocab_size), max_degree=max_degree)
    # terminal node ids come out of the loop in increasing order (by depth, then row), i.e. in rank order
    return trie, np.concatenate(terminal_rows)


def _name(names: Sequence[str] | None, i: int) -> str:
    return repr(names[i]) if names is not None else f"#{i}"
