"""Damaged index files: every flipped byte, swapped array, truncation, absurd header or cut JSON is an error that names
the file (TrieError, a ValueError), never a silent load, a bare JSONDecodeError or a numpy reshape error."""

from __future__ import annotations

import json
import logging
import shutil
import struct

import numpy as np
import pytest

from dlsearch.decoding.index import TrieIndex, index_from_sequences
from dlsearch.decoding.trie import TrieError

V, EOS = 300, 2


def _index(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    seqs = list(dict.fromkeys(tuple(rng.integers(3, V, size=rng.integers(1, 5))) for _ in range(n)))
    return index_from_sequences([f"i{seed}_{i}" for i in range(len(seqs))], [list(s) for s in seqs], vocab_size=V,
                                end_token_id=EOS)


@pytest.fixture()
def saved(tmp_path):
    index = _index(0)
    index.add_items(["new"], [[7, 7, 7, 7, 7]])
    index.save(tmp_path / "idx", compact=False)  # base + delta files
    return tmp_path / "idx"


def _data_start(path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


@pytest.mark.parametrize("name", ["trie.safetensors", "delta.safetensors"])
def test_flipped_data_bytes_detected(saved, tmp_path, name):
    path = saved / name
    raw = bytearray(path.read_bytes())
    start = _data_start(path)
    for pos in np.random.default_rng(1).integers(start, len(raw), size=12):
        d = tmp_path / f"flip{pos}"
        shutil.copytree(saved, d)
        damaged = bytearray(raw)
        damaged[pos] ^= 0x10
        (d / name).write_bytes(bytes(damaged))
        with pytest.raises(TrieError, match=name):
            TrieIndex.load(d)


def test_another_index_arrays_under_this_manifest_detected(saved, tmp_path):
    other = _index(5)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "trie.safetensors", saved / "trie.safetensors")
    with pytest.raises(TrieError, match="trie.safetensors"):
        TrieIndex.load(saved)


def test_base_and_delta_files_swapped_detected(saved):
    a, b = saved / "trie.safetensors", saved / "delta.safetensors"
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    with pytest.raises(TrieError, match="safetensors"):
        TrieIndex.load(saved)


@pytest.mark.parametrize("name", ["trie.safetensors", "delta.safetensors"])
def test_truncation_anywhere_detected_even_without_verification(saved, tmp_path, name):
    raw = (saved / name).read_bytes()
    start = _data_start(saved / name)
    cuts = [0, 3, 8, 20, start - 1, start, start + 1, (start + len(raw)) // 2, len(raw) - 1]
    for cut in cuts:
        d = tmp_path / f"cut{cut}"
        shutil.copytree(saved, d)
        (d / name).write_bytes(raw[:cut])
        for verify in (True, False):
            with pytest.raises(TrieError, match=name):
                TrieIndex.load(d, verify=verify)


def test_absurd_header_length(saved):
    path = saved / "trie.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**12) + raw[8:])
    with pytest.raises(TrieError, match="header length"):
        TrieIndex.load(saved)


@pytest.mark.parametrize("cut", [1, 40, -3])
def test_truncated_manifest(saved, cut):
    text = (saved / "manifest.json").read_text()
    (saved / "manifest.json").write_text(text[:cut])
    with pytest.raises(TrieError, match="manifest.json"):
        TrieIndex.load(saved)


def test_format1_index_loads_and_truncated_items_json_named(tmp_path):
    """An index saved by format 1 (items.json + trie.safetensors) still loads; a cut items.json is named."""
    index = _index(3)
    d = tmp_path / "v1"
    index.base.trie.save(d / "trie.safetensors")
    (d / "items.json").write_text(json.dumps(index.base.item_ids.tolist()))
    (d / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "trie", "mode": "whole",
                                                 "end_token_id": EOS, "retired": []}))
    loaded = TrieIndex.load(d)
    assert loaded.item_ids == index.item_ids
    text = (d / "items.json").read_text()
    (d / "items.json").write_text(text[: len(text) // 2])
    with pytest.raises(TrieError, match="items.json"):
        TrieIndex.load(d)


def test_verify_false_warns(saved, caplog):
    with caplog.at_level(logging.WARNING):
        index = TrieIndex.load(saved, verify=False)
    assert "verify=False" in caplog.text and len(index) == len(_index(0)) + 1


def test_manifest_from_another_index_refused(saved, tmp_path):
    other = _index(5)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "manifest.json", saved / "manifest.json")
    with pytest.raises(TrieError):
        TrieIndex.load(saved)
