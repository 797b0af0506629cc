"""The saved trie index of a catalog: base trie + delta trie + retired items, with its manifest and safety checks.

Directory layout written by `TrieIndex.save(dir)`:

    dir/trie.safetensors   flat arrays of the merged trie (see decoding/trie.py), loaded memory-mapped
    dir/items.json         item ids in index-row order (row = rank of the item's terminal node)
    dir/manifest.json      format version, tokenizer fingerprint, catalog hash + version + recorded ancestors,
                           end token, mode ("whole": one item then EOS; "span": items inside free text), sizes

Adding items does not rebuild the base: they go into a small delta trie (rebuilt from the delta's own sequences,
milliseconds for thousands of items) that the constraint walks alongside the base. Retiring items adds them to a
deny set applied as a query-time mask. `save` merges both into one trie.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dlsearch.decoding.trie import TokenTrie, TrieError, build_trie, pad_sequences

INDEX_FORMAT_VERSION = 1
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
    is denied (subtree counts, computed once per trie), and a denied item's own end token closes."""
    if allow_rows is not None:
        rows = np.unique(np.asarray(allow_rows, dtype=np.int64))
        if rows.size == 0:
            z = np.zeros(0, dtype=np.int64)
            return NodeFilter(True, z, z)
        return NodeFilter(True, trie.path_nodes(rows), np.sort(trie.terminal_nodes()[rows]))
    rows = np.unique(np.asarray(deny_rows if deny_rows is not None else [], dtype=np.int64))
    if rows.size == 0:
        return NodeFilter.none()
    ends = np.sort(trie.terminal_nodes()[rows])
    # count denied items per path node, walking up level by level (vectorized over the denied items)
    cur = trie.terminal_nodes()[rows]
    hits = [cur]
    for _ in range(trie.max_depth):
        cur = trie.parent(cur[cur > 0])
        cur = cur[cur > 0]
        if cur.size == 0:
            break
        hits.append(cur)
    nodes, counts = np.unique(np.concatenate(hits), return_counts=True)
    dead = nodes[counts == trie.subtree_items()[nodes]]
    return NodeFilter(False, dead, ends)


@dataclass
class Segment:
    """One trie the constraint walks; its rows map to item ids via `item_ids`."""

    trie: TokenTrie
    item_ids: list[str]
    retired_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class TrieIndex:
    base: Segment
    manifest: dict[str, Any]
    delta: Segment | None = None
    _row_of_cache: dict[str, tuple[int, int]] | None = field(default=None, repr=False)
    _delta_seqs: list[list[int]] = field(default_factory=list, repr=False)

    def _reindex(self) -> None:
        self._row_of_cache = None

    @property
    def _row_of(self) -> dict[str, tuple[int, int]]:
        """item id -> (segment, row); built on first use (filters, updates), not at load."""
        if self._row_of_cache is None:
            self._row_of_cache = {iid: (0, r) for r, iid in enumerate(self.base.item_ids)}
            if self.delta is not None:
                self._row_of_cache.update({iid: (1, r) for r, iid in enumerate(self.delta.item_ids)})
        return self._row_of_cache

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
        """Live item ids (base then delta), retired ones excluded."""
        retired = set(self.manifest.get("retired", []))
        return [i for s in self.segments for i in s.item_ids if i not in retired]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of and item_id not in set(self.manifest.get("retired", []))

    def item_id(self, segment: int, row: int) -> str:
        return self.segments[segment].item_ids[row]

    def nbytes(self) -> int:
        return sum(s.trie.nbytes() for s in self.segments)

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

    def add_items(self, item_ids: Sequence[str], sequences: Sequence[Sequence[int]], *,
                  catalog_hash: str | None = None) -> float:
        """Add items through the delta trie (the base is untouched). Returns seconds spent."""
        t0 = time.perf_counter()
        if len(item_ids) != len(sequences):
            raise ValueError(f"{len(item_ids)} item ids but {len(sequences)} token sequences")
        retired = set(self.manifest.get("retired", []))
        clash = [i for i in item_ids if i in self._row_of and i not in retired]
        if clash:
            raise ValueError(f"items already in the index: {clash[:5]}")
        ids = (self.delta.item_ids if self.delta is not None else []) + list(item_ids)
        seqs = self._delta_seqs + [list(s) for s in sequences]
        tokens, lengths = pad_sequences(seqs)
        trie, order = build_trie(tokens, lengths, self.base.trie.vocab_size, item_names=ids)
        self._delta_seqs = seqs
        self.delta = Segment(trie, [ids[i] for i in order])
        # an added sequence equal to a base item's would make two items indistinguishable: refuse it
        dup = _walk_exact(self.base.trie, tokens, lengths)
        live = np.array([self.base.item_ids[r] not in retired if r >= 0 else False for r in dup])
        if live.any():
            k = int(np.flatnonzero(live)[0])
            raise TrieError(f"added item {ids[k]!r} has the same tokens as indexed item {self.base.item_ids[dup[k]]!r}")
        self.manifest["retired"] = [i for i in self.manifest.get("retired", []) if i not in set(item_ids)]
        self._refresh_retired()
        if catalog_hash is not None:
            self._record_catalog(catalog_hash)
        self._reindex()
        return time.perf_counter() - t0

    def retire_items(self, item_ids: Iterable[str], *, catalog_hash: str | None = None) -> None:
        """Retire items: they stay in the arrays until the next save but are masked out of every query."""
        item_ids = list(item_ids)
        unknown = [i for i in item_ids if i not in self._row_of]
        if unknown:
            raise ValueError(f"cannot retire items that are not in the index: {unknown[:5]}")
        self.manifest["retired"] = sorted(set(self.manifest.get("retired", [])) | set(item_ids))
        self._refresh_retired()
        if catalog_hash is not None:
            self._record_catalog(catalog_hash)

    def _refresh_retired(self) -> None:
        retired = set(self.manifest.get("retired", []))
        for s in self.segments:
            if not retired:
                s.retired_rows = np.zeros(0, dtype=np.int64)
                continue
            s.retired_rows = np.array([r for r, i in enumerate(s.item_ids) if i in retired], dtype=np.int64)

    def _record_catalog(self, catalog_hash: str) -> None:
        if catalog_hash != self.manifest.get("catalog_hash"):
            self.manifest.setdefault("catalog_ancestors", []).append(self.manifest.get("catalog_hash"))
            self.manifest["catalog_hash"] = catalog_hash
            self.manifest["catalog_version"] = int(self.manifest.get("catalog_version", 1)) + 1

    def merged(self) -> "TrieIndex":
        """One trie holding base + delta minus retired (what `save` writes)."""
        retired = set(self.manifest.get("retired", []))
        if self.delta is None and not retired:
            return self
        seqs_b, lens_b = self.base.trie.sequences()
        keep = np.array([i not in retired for i in self.base.item_ids], dtype=bool)
        ids = [i for i, k in zip(self.base.item_ids, keep) if k]
        tokens, lengths = seqs_b[keep], lens_b[keep]
        if self.delta is not None:
            seqs_d, lens_d = self.delta.trie.sequences()
            keep_d = np.array([i not in retired for i in self.delta.item_ids], dtype=bool)
            ids += [i for i, k in zip(self.delta.item_ids, keep_d) if k]
            width = max(tokens.shape[1], seqs_d.shape[1])
            tokens = np.concatenate([_widen(tokens, width), _widen(seqs_d[keep_d], width)])
            lengths = np.concatenate([lengths, lens_d[keep_d]])
        trie, order = build_trie(tokens, lengths, self.base.trie.vocab_size, item_names=ids)
        manifest = {**self.manifest, "retired": [], "n_items": len(ids)}
        return TrieIndex(Segment(trie, [ids[i] for i in order]), manifest)

    # --- persistence ---------------------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Merge deltas and retired items, then write trie.safetensors, items.json and manifest.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        m = self.merged()
        m.base.trie.save(out / "trie.safetensors")
        _write_json(out / "items.json", m.base.item_ids)
        manifest = {**m.manifest, **{f"trie_{k}": v for k, v in m.base.trie.meta().items()},
                    "format_version": INDEX_FORMAT_VERSION, "kind": "trie", "n_items": len(m.base.item_ids)}
        _write_json(out / "manifest.json", manifest)
        if m is not self:  # the merged trie becomes this index's base
            self.base, self.delta, self.manifest, self._delta_seqs = m.base, None, manifest, []
            self._reindex()
        else:
            self.manifest = manifest
        return out

    @classmethod
    def load(cls, index_dir: str | Path, *, tokenizer: Any | None = None, catalog_hash: str | None = None,
             catalog_ancestors: Sequence[str] = (), mmap: bool = True) -> "TrieIndex":
        """Load an index (arrays memory-mapped) and, when given, check the tokenizer and the catalog.

        Raises:
            FileNotFoundError: missing files. IndexMismatchError: wrong tokenizer or catalog. ValueError: bad manifest.
        """
        d = Path(index_dir)
        for name in ("manifest.json", "items.json", "trie.safetensors"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name}: missing; build the index with `dlsearch index build --kind trie`")
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("kind") != "trie":
            raise ValueError(f"{d / 'manifest.json'}: kind {manifest.get('kind')!r} is not a trie index")
        if int(manifest.get("format_version", 0)) > INDEX_FORMAT_VERSION:
            raise ValueError(f"{d / 'manifest.json'}: format {manifest['format_version']} is newer than this package")
        items = json.loads((d / "items.json").read_text(encoding="utf-8"))
        trie = TokenTrie.load(d / "trie.safetensors", mmap=mmap)
        if len(items) != trie.n_items:
            raise ValueError(f"{d}: items.json lists {len(items)} items, the trie holds {trie.n_items}")
        index = cls(Segment(trie, items), manifest)
        if tokenizer is not None:
            index.check_tokenizer(tokenizer)
        if catalog_hash is not None:
            index.check_catalog(catalog_hash, ancestors=catalog_ancestors)
        return index

    # --- query-time filters --------------------------------------------------------------------------------------

    def filters(self, allow: Sequence[Iterable[str] | None] | None = None,
                deny: Sequence[Iterable[str] | None] | None = None, n_queries: int = 1) -> list[list[NodeFilter]]:
        """Node filters [segment][query] for per-query allow-lists and deny-lists of item ids (retired items are
        always denied). Unknown ids in a deny-list are ignored; in an allow-list they are ignored too (they cannot be
        generated anyway)."""
        allow = list(allow) if allow is not None else [None] * n_queries
        deny = list(deny) if deny is not None else [None] * n_queries
        if len(allow) != len(deny):
            raise ValueError(f"allow has {len(allow)} entries, deny {len(deny)}: give one per query")
        out: list[list[NodeFilter]] = []
        for s_idx, seg in enumerate(self.segments):
            per_q = []
            for a, dn in zip(allow, deny):
                rows_of = lambda ids: np.array(  # noqa: E731
                    [self._row_of[i][1] for i in ids if i in self._row_of and self._row_of[i][0] == s_idx], dtype=np.int64)
                if a is not None:
                    rows = np.setdiff1d(rows_of(a), seg.retired_rows)
                    if dn is not None:
                        rows = np.setdiff1d(rows, rows_of(dn))
                    per_q.append(node_filter(seg.trie, allow_rows=rows))
                else:
                    rows = seg.retired_rows if dn is None else np.union1d(seg.retired_rows, rows_of(dn))
                    per_q.append(node_filter(seg.trie, deny_rows=rows))
            out.append(per_q)
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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1 if isinstance(obj, dict) else None), encoding="utf-8")
    tmp.replace(path)


def index_from_sequences(item_ids: Sequence[str], sequences: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
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
    if ((tokens == end_token_id) & (np.arange(tokens.shape[1])[None, :] < np.asarray(lengths)[:, None])).any():
        raise TrieError(f"an item's tokens contain the end token {end_token_id}; the end could not be told apart")
    trie, order = build_trie(tokens, lengths, vocab_size, item_names=item_ids)
    man = {"format_version": INDEX_FORMAT_VERSION, "kind": "trie", "mode": mode, "end_token_id": int(end_token_id),
           "vocab_size": int(vocab_size), "n_items": len(item_ids), "retired": [], **(manifest or {})}
    return TrieIndex(Segment(trie, [item_ids[i] for i in order]), man)


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
    from dlsearch.data.prompts import ITEM_END
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
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return index_from_sequences(catalog.ids, seqs, vocab_size=vocab, end_token_id=end, mode=mode, manifest=manifest)
