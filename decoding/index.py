"""The saved trie index of a catalog: base trie + delta trie + retired rows, with its manifest and safety checks.

Directory layout written by `TrieIndex.save(dir)` (format 2):

    dir/trie.safetensors   the base segment: flat trie arrays (see decoding/trie.py), its item ids (decoding/id_table.py:
                           UTF-8 bytes + offsets + a sorted hash index) and its retired rows; loaded memory-mapped
    dir/delta.safetensors  the delta segment (items added since the last compaction), same arrays; only when present
    dir/manifest.json      format version, tokenizer fingerprint, catalog hash + version + recorded ancestors, end
                           token, mode ("whole": one item then EOS; "span": items inside free text), sizes, and a
                           checksum of every array, verified on load

Adding items does not rebuild the base: they go into a small delta trie (rebuilt from the delta's own live items,
milliseconds for thousands of items) that the constraint walks alongside the base. Retiring marks rows, never ids, so
an id retired and added again with a new code cannot bring its old code back. `save` writes the segments as they are,
or compacts them into one trie (`compact=True`, or by default when that is cheap).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dlsearch.data.files import atomic_write_text
from dlsearch.decoding.id_table import IdTable, encode_ids, gather_ids
from dlsearch.decoding.trie import DIGEST, TokenTrie, TrieError, build_trie, pad_sequences, read_safetensors, verify_arrays

log = logging.getLogger(__name__)
INDEX_FORMAT_VERSION = 2  # 1: items.json + one trie file, no checksums (still loaded)
SEGMENT_FILES = ("trie.safetensors", "delta.safetensors")
COMPACT_BELOW = 1_000_000  # live items below which save() rebuilds one trie by default (about a second)
MODES = ("whole", "span")


class IndexMismatchError(ValueError):
    """An index used with another tokenizer or with a catalog it was not built for."""


@dataclass
class NodeFilter:
    """Per-query node filter on one trie: an edge into node c is allowed iff (c listed) == allow; the end token at a
    terminal node n iff (n in ends) == allow. allow=False with empty lists means no filtering."""

    allow: bool
    nodes: np.ndarray  # int64 sorted
    ends: np.ndarray  # int64 sorted

    @staticmethod
    def none() -> "NodeFilter":
        z = np.zeros(0, dtype=np.int64)
        return NodeFilter(False, z, z)


def node_filter(trie: TokenTrie, *, allow_rows: np.ndarray | None = None, deny_rows: np.ndarray | None = None) -> NodeFilter:
    """Turn an item allow-list or deny-list (index rows of this trie) into a node filter without touching the trie.

    allow: the nodes on the allowed items' paths stay open, nothing else. deny: a node closes when every item below it
    is denied (subtree counts of the hit nodes only: rank differences over their breadth-first ranges), and a denied
    item's own end token closes. Cost grows with the list, not with the trie."""
    if allow_rows is not None:
        rows = np.unique(np.asarray(allow_rows, dtype=np.int64))
        if rows.size == 0:
            z = np.zeros(0, dtype=np.int64)
            return NodeFilter(True, z, z)
        return NodeFilter(True, trie.path_nodes(rows), np.sort(trie.select(rows)))
    return deny_filters(trie, [deny_rows if deny_rows is not None else []])[0]


def deny_filters(trie: TokenTrie, deny_rows: Sequence[np.ndarray]) -> list[NodeFilter]:
    """Deny filters for several queries' row lists at once: one select, one upward walk, one subtree count over the
    union of hit nodes (the per-call overhead, not the list size, dominates small lists)."""
    lists = [np.unique(np.asarray(r, dtype=np.int64)) for r in deny_rows]
    sizes = np.array([x.shape[0] for x in lists], dtype=np.int64)
    if sizes.sum() == 0:
        return [NodeFilter.none() for _ in lists]
    n = trie.n_nodes
    query = np.repeat(np.arange(len(lists), dtype=np.int64), sizes)
    ends = trie.select(np.concatenate(lists))
    # count denied items per (query, path node), walking up level by level (vectorized over every denied item)
    cur, q = ends, query
    hits = [q * n + cur]
    for _ in range(trie.max_depth):
        keep = cur > 0
        cur, q = trie.parent(cur[keep]), q[keep]
        keep = cur > 0
        cur, q = cur[keep], q[keep]
        if cur.size == 0:
            break
        hits.append(q * n + cur)
    keys, counts = np.unique(np.concatenate(hits), return_counts=True)
    nodes = keys % n
    uniq, inv = np.unique(nodes, return_inverse=True)
    dead_keys = keys[counts == trie.subtree_counts(uniq)[inv]]
    out = []
    for i in range(len(lists)):
        lo, hi = np.searchsorted(dead_keys, [i * n, (i + 1) * n])
        sel = query == i
        out.append(NodeFilter(False, dead_keys[lo:hi] - i * n, np.sort(ends[sel])) if sizes[i] else NodeFilter.none())
    return out


@dataclass
class Segment:
    """One trie the constraint walks; its rows map to item ids via `item_ids` (an IdTable: no Python object per
    item). Retired rows stay in the arrays and are masked at query time; an id lives in at most one live row."""

    trie: TokenTrie
    item_ids: IdTable
    retired_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # int64, sorted, unique

    def __post_init__(self) -> None:
        if isinstance(self.item_ids, (list, tuple, np.ndarray)):
            self.item_ids = IdTable.from_ids(self.item_ids)

    def live_rows(self) -> np.ndarray:
        keep = np.ones(self.trie.n_items, dtype=bool)
        keep[self.retired_rows] = False
        return np.flatnonzero(keep)

    def is_retired(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.retired_rows, rows), max(self.retired_rows.shape[0] - 1, 0))
        return (self.retired_rows[pos] == rows) if self.retired_rows.size else np.zeros(rows.shape, dtype=bool)


@dataclass
class TrieIndex:
    """A catalog's trie index: a base segment, an optional delta segment (added items), retired rows per segment.

    One id <-> code mapping: every live id has exactly one live (segment, row); a code (token sequence) belongs to at
    most one live item. Updates validate everything before they change anything."""

    base: Segment
    manifest: dict[str, Any]
    delta: Segment | None = None
    _source: dict[str, Any] = field(default_factory=dict, repr=False)  # where the arrays were loaded from

    # --- basic facts ---------------------------------------------------------------------------------------------

    @property
    def end_token_id(self) -> int:
        return int(self.manifest["end_token_id"])

    @property
    def mode(self) -> str:
        return str(self.manifest["mode"])

    @property
    def segments(self) -> list[Segment]:
        return [self.base] + ([self.delta] if self.delta is not None else [])

    @property
    def item_ids(self) -> list[str]:
        """Live item ids (base then delta) as a Python list: one object per item, avoid at catalog scale (use
        `locate` / `segments[s].item_ids` / `live_rows`)."""
        return [seg.item_ids[r] for seg in self.segments for r in seg.live_rows()]

    def __len__(self) -> int:
        return sum(s.trie.n_items - int(s.retired_rows.shape[0]) for s in self.segments)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self.locate([item_id])[0][0] >= 0)

    def item_id(self, segment: int, row: int) -> str:
        return self.segments[segment].item_ids[row]

    def nbytes(self) -> int:
        return sum(s.trie.nbytes() + sum(int(a.nbytes) for a in s.item_ids.arrays().values()) for s in self.segments)

    # --- lookups -------------------------------------------------------------------------------------------------

    def locate(self, item_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Live (segment, row) of each id; (-1, -1) for ids not in the index or retired. int64 [k] each."""
        n = len(item_ids)
        seg_of = np.full(n, -1, dtype=np.int64)
        row_of = np.full(n, -1, dtype=np.int64)
        for s, seg in enumerate(self.segments):
            rows = seg.item_ids.rows_of(item_ids)
            live = (rows >= 0) & ~seg.is_retired(rows) & (seg_of < 0)
            seg_of[live], row_of[live] = s, rows[live]
        return seg_of, row_of

    def locate_codes(self, tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Live (segment, row) of the item whose code is exactly each sequence; (-1, -1) where none (retired rows
        never answer: a delta item may reuse a retired item's code). tokens int [k, w] padded with -1, lengths [k]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        seg_of = np.full(tokens.shape[0], -1, dtype=np.int64)
        row_of = np.full(tokens.shape[0], -1, dtype=np.int64)
        for s, seg in enumerate(self.segments):
            rows = _walk_exact(seg.trie, tokens, lengths)
            live = (rows >= 0) & ~seg.is_retired(np.maximum(rows, 0)) & (seg_of < 0)
            seg_of[live], row_of[live] = s, rows[live]
        return seg_of, row_of

    def ids_of_codes(self, sequences: Sequence[Sequence[int]]) -> list[str | None]:
        """The live item id of each token sequence, None where no live item has exactly that code."""
        if not len(sequences):
            return []
        seg, row = self.locate_codes(*_pad_or_empty(sequences))
        return [self.segments[s].item_ids[r] if s >= 0 else None for s, r in zip(seg, row)]

    def code(self, item_id: str) -> list[int]:
        """The token sequence (without end token) of a live item. Raises KeyError when it is not in the index."""
        (s,), (r,) = self.locate([item_id])
        if s < 0:
            raise KeyError(item_id)
        trie = self.segments[s].trie
        node = trie.select(np.array([r]))
        out: list[int] = []
        while node[0] > 0:
            out.append(int(trie.child_token[node[0] - 1]))
            node = trie.parent(node)
        return out[::-1]

    # --- safety checks -------------------------------------------------------------------------------------------

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a tokenizer whose fingerprint differs from the one the index was built with."""
        from dlsearch.decoding.fingerprint import tokenizer_fingerprint

        want = self.manifest.get("tokenizer_fingerprint")
        got = tokenizer_fingerprint(tokenizer)
        if want != got:
            raise IndexMismatchError(
                f"index was built with tokenizer {str(want)[:12]}, this tokenizer is {got[:12]}: token ids differ, the "
                "constraint would be wrong. Rebuild the index with this tokenizer (dlsearch index build --kind trie).")
        # The fingerprint leaves out the chat template; whole-output items were tokenized after its generation prompt,
        # so a template whose answer context differs would make the model write other tokens (indexes older than
        # this field record none).
        context = self.manifest.get("answer_context")
        if context is not None:
            from dlsearch.data.prompts import answer_context

            mine = answer_context(tokenizer)
            if mine != context:
                raise IndexMismatchError(
                    f"index items were tokenized after the answer context {context!r}, this tokenizer's chat template "
                    f"ends its prompts with {mine!r}: the model would write other tokens. Rebuild "
                    "the index with this model's tokenizer (dlsearch index build --kind trie).")

    def check_catalog(self, catalog_hash: str, *, ancestors: Sequence[str] = ()) -> None:
        """Accept the catalog the index was built for, or a catalog that records the index's catalog among its
        ancestors (an extension: every indexed item still exists). Anything else is refused."""
        mine = self.manifest.get("catalog_hash")
        if catalog_hash == mine or mine in set(ancestors):
            return
        raise IndexMismatchError(
            f"index was built for catalog {str(mine)[:12]} (version {self.manifest.get('catalog_version')}), this "
            f"catalog is {catalog_hash[:12]} and does not record it as an ancestor. Rebuild the index for this catalog.")

    # --- updates -------------------------------------------------------------------------------------------------

    def add_items(self, item_ids: Sequence[str] | np.ndarray, sequences: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
                  *, catalog_hash: str | None = None) -> float:
        """Add items through the delta trie (the base is untouched). Everything is checked first: on any error the
        index is unchanged. An id retired earlier may come back, with any code that no live item holds.

        Returns seconds spent. Raises ValueError (ids already live, repeated ids, length mismatch) or TrieError
        (empty / out-of-vocabulary sequences, the end token inside a code, a code another live item holds)."""
        t0 = time.perf_counter()
        new_ids = IdTable.from_ids(item_ids)
        tokens, lengths = sequences if isinstance(sequences, tuple) else _pad_or_empty(sequences)
        tokens, lengths = np.asarray(tokens, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        if len(new_ids) != tokens.shape[0]:
            raise ValueError(f"{len(new_ids)} item ids but {tokens.shape[0]} token sequences")
        if len(new_ids) == 0:
            return time.perf_counter() - t0
        dup = new_ids.duplicate()
        if dup is not None:
            raise ValueError(f"item id {new_ids[dup[0]]!r} is given twice (positions {dup[0]} and {dup[1]})")
        seg, _ = self.locate(new_ids)
        if (seg >= 0).any():
            clash = [new_ids[i] for i in np.flatnonzero(seg >= 0)[:5]]
            raise ValueError(f"items already in the index: {clash}; retire them first to change their codes")
        _check_end_token(tokens, lengths, self.end_token_id, new_ids)
        # validates the new sequences (empty, vocabulary, repeated codes inside the batch) before anything changes
        build_trie(tokens, lengths, self.base.trie.vocab_size, item_names=new_ids)
        held_seg, held_row = self.locate_codes(tokens, lengths)
        if (held_seg >= 0).any():
            k = int(np.flatnonzero(held_seg >= 0)[0])
            other = self.segments[int(held_seg[k])].item_ids[int(held_row[k])]
            raise TrieError(f"added item {new_ids[k]!r} has the same tokens as indexed item {other!r}")
        # the new delta: the old delta's live items (in its row order, ids and codes read from the same rows) + new
        if self.delta is not None:
            keep = self.delta.live_rows()
            old_tok, old_len = self.delta.trie.sequences()
            width = max(old_tok.shape[1], tokens.shape[1])
            tokens = np.concatenate([_widen(old_tok[keep], width), _widen(tokens, width)])
            lengths = np.concatenate([old_len[keep], lengths])
            new_ids = IdTable.concat(self.delta.item_ids.take(keep), new_ids)
        trie, order = build_trie(tokens, lengths, self.base.trie.vocab_size, item_names=new_ids)
        self.delta = Segment(trie, new_ids.take(order))
        if catalog_hash is not None:
            self._record_catalog(catalog_hash)
        return time.perf_counter() - t0

    def retire_items(self, item_ids: Iterable[str], *, catalog_hash: str | None = None) -> None:
        """Retire items: their rows stay in the arrays but are masked out of every query and dropped when the index
        is compacted. Ids already retired are ignored; ids never indexed raise ValueError (nothing changes)."""
        item_ids = list(item_ids)
        seg, row = self.locate(item_ids)
        unknown = [i for i, s in zip(item_ids, seg) if s < 0 and not any(i in x.item_ids for x in self.segments)]
        if unknown:
            raise ValueError(f"cannot retire items that are not in the index: {unknown[:5]}")
        for s, segment in enumerate(self.segments):
            segment.retired_rows = np.union1d(segment.retired_rows, row[seg == s]).astype(np.int64)
        if catalog_hash is not None:
            self._record_catalog(catalog_hash)

    def _record_catalog(self, catalog_hash: str) -> None:
        if catalog_hash != self.manifest.get("catalog_hash"):
            self.manifest.setdefault("catalog_ancestors", []).append(self.manifest.get("catalog_hash"))
            self.manifest["catalog_hash"] = catalog_hash
            self.manifest["catalog_version"] = int(self.manifest.get("catalog_version", 1)) + 1

    def merged(self) -> "TrieIndex":
        """One trie holding the live items of every segment (what `save(compact=True)` writes).

        The live rows of each segment come out of its trie already in trie order, so the build's sort meets sorted
        runs (0.1 s of 3.2 s CPU at 2M items): the cost is copying the codes and ids, O(n)."""
        if self.delta is None and not self.base.retired_rows.size:
            return self
        tok_dtype = np.int32 if self.base.trie.vocab_size < 2**31 - 1 else np.int64
        parts_tok, parts_len, parts_ids = [], [], []
        for seg in self.segments:
            tok, ln = seg.trie.sequences(dtype=tok_dtype)
            ln = ln.astype(np.int16 if tok.shape[1] < 2**15 else np.int64)  # 2 bytes per item instead of 8
            if seg.retired_rows.size:  # without retired rows the arrays are used as they are (no copy)
                keep = seg.live_rows()
                tok, ln = tok[keep], ln[keep]
                parts_ids.append(seg.item_ids.take(keep))
            else:
                parts_ids.append(seg.item_ids)
            parts_tok.append(tok)
            parts_len.append(ln)
            del tok, ln
        width = max(t.shape[1] for t in parts_tok)
        tokens = np.concatenate([_widen(t, width) for t in parts_tok])
        lengths = np.concatenate(parts_len)
        ids = parts_ids[0] if len(parts_ids) == 1 else IdTable.concat(parts_ids[0], parts_ids[1])
        del parts_tok, parts_len, parts_ids  # the build below is the peak: hold one copy of the codes and ids only
        if tokens.shape[0] == 0:
            raise TrieError("every item is retired: an index needs at least one live item")
        trie, order = build_trie(tokens, lengths, self.base.trie.vocab_size, item_names=ids)
        del tokens, lengths
        manifest = {**self.manifest, "retired": [], "n_items": len(ids)}
        return TrieIndex(Segment(trie, ids.take(order)), manifest)

    def compact(self) -> None:
        """Rebuild base + delta - retired into one base trie, in place."""
        m = self.merged()
        self.base, self.delta, self.manifest = m.base, m.delta, m.manifest

    # --- persistence ---------------------------------------------------------------------------------------------

    def save(self, out_dir: str | Path, *, compact: bool | None = None) -> Path:
        """Write the index: manifest.json plus one safetensors file per segment (trie arrays, item ids, retired rows).

        compact: True rebuilds everything into one trie first; False writes the segments as they are (the base is
        not rebuilt: a save after an add costs a copy of the arrays, not a rebuild); None (default) compacts when it
        is cheap (<= 1M live items) or when the delta and retired rows exceed 1/8 of the base."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        changed = self.delta is not None or bool(self.base.retired_rows.size)
        if compact is None:
            extra = (self.delta.trie.n_items if self.delta is not None else 0) + self.base.retired_rows.shape[0]
            compact = changed and (len(self) <= COMPACT_BELOW or extra * 8 > self.base.trie.n_items)
        if compact and changed:
            self.compact()
        files, checksums = [], {}
        for s, seg in enumerate(self.segments):
            name = SEGMENT_FILES[s]
            arrays = {**seg.item_ids.arrays(), "retired_rows": seg.retired_rows.astype(np.int64)}
            checksums[name] = seg.trie.save(out / name, extra=arrays)
            files.append({"file": name, "n_items": seg.trie.n_items, "n_retired": int(seg.retired_rows.shape[0]),
                          **{f"trie_{k}": v for k, v in seg.trie.meta().items()}})
        for stale in SEGMENT_FILES[len(self.segments):] + ("items.json",):  # from an earlier save into this directory
            (out / stale).unlink(missing_ok=True)
        manifest = {k: v for k, v in self.manifest.items() if not k.startswith("trie_")}
        manifest.update({"format_version": INDEX_FORMAT_VERSION, "kind": "trie", "n_items": len(self), "retired": [],
                         "segments": files, "checksum": DIGEST, "checksums": checksums,
                         **{f"trie_{k}": v for k, v in self.base.trie.meta().items()}})
        _write_json(out / "manifest.json", manifest)
        self.manifest = manifest
        return out

    @classmethod
    def load(cls, index_dir: str | Path, *, tokenizer: Any | None = None, catalog_hash: str | None = None,
             catalog_ancestors: Sequence[str] = (), mmap: bool = True, verify: bool = True) -> "TrieIndex":
        """Load an index (arrays memory-mapped) and, when given, check the tokenizer and the catalog.

        verify: compare every array with the checksum in the manifest (reads every byte once: ~0.3 s per GB with
            xxhash). verify=False skips it for huge indexes and logs a warning; sizes are still checked.

        Raises:
            FileNotFoundError: missing files. IndexMismatchError: wrong tokenizer or catalog. TrieError (a ValueError):
            a damaged or truncated file, naming it and what is wrong.
        """
        d = Path(index_dir)
        manifest = _read_json(d / "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("kind") != "trie":
            kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
            raise TrieError(f"{d / 'manifest.json'}: kind {kind!r} is not a trie index")
        version = manifest.get("format_version", 0)
        if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
            raise TrieError(f"{d / 'manifest.json'}: format {version!r} is newer than this package (or damaged)")
        if version < 2:
            return cls._load_v1(d, manifest, tokenizer, catalog_hash, catalog_ancestors, mmap)
        if not verify:
            log.warning("%s: loading without checksum verification (verify=False); a damaged array would not be "
                        "detected", d)
        segments = []
        files = manifest.get("segments")
        if not isinstance(files, list) or not 1 <= len(files) <= len(SEGMENT_FILES):
            raise TrieError(f"{d / 'manifest.json'}: 'segments' must list 1 or 2 segment files, got {files!r}")
        for s, info in enumerate(files):
            name = SEGMENT_FILES[s]
            path = d / name
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing; the manifest lists it (rebuild with `dlsearch index build "
                                        "--kind trie`)")
            arrays, meta = read_safetensors(path, mmap=mmap)
            if verify:
                sums = manifest.get("checksums", {}).get(name)
                if not isinstance(sums, dict):
                    raise TrieError(f"{d / 'manifest.json'}: no checksums for {name}; load with verify=False to skip")
                verify_arrays(path, arrays, sums)
            trie = TokenTrie.from_arrays(arrays, meta, path)
            ids = IdTable.from_arrays(arrays, path)
            retired = np.asarray(arrays.get("retired_rows", np.zeros(0, dtype=np.int64)), dtype=np.int64)
            if len(ids) != trie.n_items or (isinstance(info, dict) and info.get("n_items") != trie.n_items):
                raise TrieError(f"{path}: {len(ids)} item ids for {trie.n_items} items in the trie (manifest: "
                                f"{info.get('n_items') if isinstance(info, dict) else info!r}): damaged")
            recorded = {k[5:]: v for k, v in info.items() if k.startswith("trie_")} if isinstance(info, dict) else {}
            differs = {k: (v, recorded[k]) for k, v in trie.meta().items() if k in recorded and recorded[k] != v}
            if differs or not recorded:
                raise TrieError(f"{path}: trie metadata {differs or 'missing from the manifest'} (file, manifest) "
                                "disagree: damaged, or not the file this manifest describes")
            if retired.size and (retired.min() < 0 or retired.max() >= trie.n_items or (np.diff(retired) <= 0).any()):
                raise TrieError(f"{path}: retired_rows are not sorted rows of this trie: damaged")
            segments.append(Segment(trie, ids, retired))
        index = cls(segments[0], manifest, segments[1] if len(segments) > 1 else None)
        index._check(tokenizer, catalog_hash, catalog_ancestors)
        return index

    @classmethod
    def _load_v1(cls, d: Path, manifest: dict, tokenizer, catalog_hash, catalog_ancestors, mmap) -> "TrieIndex":
        """Format 1 (items.json + trie.safetensors, no checksums): still readable; save writes format 2."""
        items = _read_json(d / "items.json")
        if not isinstance(items, list):
            raise TrieError(f"{d / 'items.json'}: expected a JSON list of item ids, got {type(items).__name__}")
        path = d / "trie.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; build the index with `dlsearch index build --kind trie`")
        arrays, meta = read_safetensors(path, mmap=mmap)
        trie = TokenTrie.from_arrays(arrays, meta, path)
        if len(items) != trie.n_items:
            raise TrieError(f"{d}: items.json lists {len(items)} items, the trie holds {trie.n_items}")
        index = cls(Segment(trie, IdTable.from_ids(items)), manifest)
        index._check(tokenizer, catalog_hash, catalog_ancestors)
        return index

    def _check(self, tokenizer: Any, catalog_hash: str | None, catalog_ancestors: Sequence[str]) -> None:
        for key in ("mode", "end_token_id"):
            if key not in self.manifest:
                raise TrieError(f"manifest lacks {key!r}: damaged index")
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        if catalog_hash is not None:
            self.check_catalog(catalog_hash, ancestors=catalog_ancestors)

    # --- query-time filters --------------------------------------------------------------------------------------

    def filters(self, allow: Sequence[Iterable[str] | None] | None = None,
                deny: Sequence[Iterable[str] | None] | None = None, n_queries: int = 1) -> list[list[NodeFilter]]:
        """Node filters [segment][query] for per-query allow-lists and deny-lists of item ids (retired rows are
        always denied). Unknown ids in either list are ignored (they cannot be generated anyway)."""
        allow = list(allow) if allow is not None else [None] * n_queries
        deny = list(deny) if deny is not None else [None] * n_queries
        if len(allow) != len(deny):
            raise ValueError(f"allow has {len(allow)} entries, deny {len(deny)}: give one per query")
        out: list[list[NodeFilter]] = []
        for seg in self.segments:
            def rows_of(ids: Iterable[str]) -> np.ndarray:
                ids = list(ids)
                r = seg.item_ids.rows_of(ids) if ids else np.zeros(0, dtype=np.int64)
                return r[r >= 0]
            per_q: list[NodeFilter | None] = []
            denied: list[np.ndarray] = []
            for a, dn in zip(allow, deny):
                if a is not None:
                    rows = np.setdiff1d(rows_of(a), seg.retired_rows)
                    if dn is not None:
                        rows = np.setdiff1d(rows, rows_of(dn))
                    per_q.append(node_filter(seg.trie, allow_rows=rows))
                else:
                    per_q.append(None)
                    denied.append(seg.retired_rows if dn is None else np.union1d(seg.retired_rows, rows_of(dn)))
            batch = iter(deny_filters(seg.trie, denied)) if denied else iter(())
            out.append([f if f is not None else next(batch) for f in per_q])
        return out


def _widen(a: np.ndarray, width: int) -> np.ndarray:
    if a.shape[1] == width:
        return a
    return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), -1, dtype=a.dtype)], axis=1)


def _walk_exact(trie: TokenTrie, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Index row of the trie item with exactly each sequence, or -1 (vectorized over sequences)."""
    node = np.zeros(tokens.shape[0], dtype=np.int64)
    for j in range(tokens.shape[1]):
        live = (j < lengths) & (node >= 0)
        if not live.any():
            break
        node[live] = trie.child(node[live], tokens[live, j])
    return np.where(node >= 0, trie.item_of(np.maximum(node, 0)), -1)


def _pad_or_empty(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    if len(seqs) == 0:
        return np.full((0, 1), -1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return pad_sequences(seqs)


def _check_end_token(tokens: np.ndarray, lengths: np.ndarray, end: int, names: Any) -> None:
    cols = np.arange(tokens.shape[1])[None, :]
    lengths = np.asarray(lengths)
    for lo in range(0, tokens.shape[0], _CHECK_ROWS):  # chunked: no [n, width] mask at 100M items
        inside = (tokens[lo:lo + _CHECK_ROWS] == end) & (cols < lengths[lo:lo + _CHECK_ROWS, None])
        if inside.any():
            i = lo + int(np.flatnonzero(inside.any(axis=1))[0])
            raise TrieError(f"item {names[i]!r}: its tokens contain the end token {end}; the end could not be told "
                            "apart")


_CHECK_ROWS = 1 << 22


@dataclass
class _NameView:
    """Item names for error messages during a build, read from the caller's ids on demand (no encoded copy)."""

    ids: Any

    def __getitem__(self, i: int) -> str:
        x = self.ids[int(i)]
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; build the index with `dlsearch index build --kind trie`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrieError(f"{path}: damaged or truncated JSON ({e}); rebuild the index or restore the file") from None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1 if isinstance(obj, dict) else None))


def index_from_sequences(item_ids: Sequence[str] | np.ndarray | IdTable, sequences: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
                         *, vocab_size: int, end_token_id: int, mode: str = "whole",
                         manifest: dict[str, Any] | None = None) -> TrieIndex:
    """Build an index from token sequences (without end token). sequences: ragged lists or (tokens, lengths)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(sequences, tuple):
        tokens, lengths = sequences
    else:
        tokens, lengths = pad_sequences(sequences)
    if len(item_ids) != tokens.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids but {tokens.shape[0]} sequences")
    names = _NameView(item_ids)
    _check_end_token(tokens, lengths, end_token_id, names)
    trie, order = build_trie(tokens, lengths, vocab_size, item_names=names)
    del tokens
    # ids in row order, then their hash index, after the trie: the build's peak never holds the id bytes twice
    if isinstance(item_ids, np.ndarray):
        ids = IdTable.from_bytes(*encode_ids(item_ids[order]))
    else:
        ids = IdTable.from_bytes(*gather_ids(*encode_ids(item_ids), order))
    del order, names
    dup = ids.duplicate()
    if dup is not None:
        raise ValueError(f"item id {ids[dup[0]]!r} is given twice")
    man = {"format_version": INDEX_FORMAT_VERSION, "kind": "trie", "mode": mode, "end_token_id": int(end_token_id),
           "vocab_size": int(vocab_size), "n_items": len(ids), "retired": [], **(manifest or {})}
    return TrieIndex(Segment(trie, ids), man)


def build_index(catalog: Any, idmap: Any, tokenizer: Any, *, mode: str = "whole", source: str = "id",
                catalog_version: int | None = None) -> TrieIndex:
    """Build the trie index of a catalog for a tokenizer.

    Args:
        catalog: data.catalog.Catalog.
        idmap: data.ids.IdMap (the codes the model writes); its catalog must match.
        tokenizer: the model's tokenizer (its fingerprint goes in the manifest).
        mode: "whole" (the output is one item, then EOS) or "span" (items inside free text between ITEM_START and
            ITEM_END; the end token is ITEM_END).
        source: "id" (idmap codes) or "title" (catalog titles as written).
    """
    from dlsearch.data.prompts import ITEM_END, answer_context
    from dlsearch.decoding.fingerprint import tokenizer_fingerprint
    from dlsearch.decoding.item_tokens import item_token_ids

    idmap.check_catalog(catalog)
    if source == "id":
        texts = [idmap.code(i) for i in catalog.ids]
    elif source == "title":
        texts = [it.title for it in catalog]
    else:
        raise ValueError(f"source must be 'id' or 'title', got {source!r}")
    seqs = item_token_ids(tokenizer, texts, mode=mode)
    if mode == "whole":
        end = tokenizer.eos_token_id
        if end is None:
            raise ValueError("the tokenizer has no eos_token_id; whole-output items end with EOS")
    else:
        end_ids = tokenizer(ITEM_END, add_special_tokens=False)["input_ids"]
        if len(end_ids) != 1:
            raise ValueError(f"{ITEM_END!r} must be one added token for span mode, it is {end_ids}")
        end = end_ids[0]
    vocab = max(len(tokenizer), max(max(s) for s in seqs) + 1)
    manifest = {
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "catalog_hash": catalog.content_hash(),
        "catalog_version": catalog_version or getattr(idmap, "version", 1), "id_scheme": idmap.scheme,
        "source": source, "catalog_ancestors": [idmap.parent_hash] if getattr(idmap, "parent_hash", None) else [],
        "answer_context": answer_context(tokenizer) if mode == "whole" else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return index_from_sequences(catalog.ids, seqs, vocab_size=vocab, end_token_id=end, mode=mode, manifest=manifest)
