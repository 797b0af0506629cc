"""IdTable: item ids as bytes + offsets with a hash index, against plain Python lists and dicts."""

from __future__ import annotations

import numpy as np
import pytest

import dlsearch.decoding.id_table as id_table
from dlsearch.decoding.id_table import IdTable

IDS = ["tt0111161", "", "é-ünïcode", "a", "ab", "tt0068646", "x" * 90]


def test_lookup_take_concat_match_python():
    t = IdTable.from_ids(IDS)
    assert len(t) == len(IDS) and t.tolist() == IDS and t[2] == "é-ünïcode" and t[-1] == "x" * 90
    assert t.rows_of(IDS + ["nope", "tt011116"]).tolist() == list(range(len(IDS))) + [-1, -1]
    rows = np.array([5, 0, 3])
    sub = t.take(rows)
    assert sub.tolist() == [IDS[5], IDS[0], IDS[3]]
    assert sub.rows_of(IDS).tolist() == [1, -1, -1, 2, -1, 0, -1]
    both = IdTable.concat(sub, IdTable.from_ids(["new", "a2"]))
    assert both.tolist() == [IDS[5], IDS[0], IDS[3], "new", "a2"]
    assert both.rows_of(["a2", IDS[0], "zz"]).tolist() == [4, 1, -1]
    assert t.duplicate() is None and IdTable.from_ids(["a", "b", "a"]).duplicate() == (0, 2)


def test_numpy_bytes_and_str_arrays_equal_lists():
    arr = np.array([s.encode() for s in IDS], dtype="S")  # NUL-padded fixed width, like a generated catalog
    assert IdTable.from_ids(arr) == IdTable.from_ids(IDS)
    assert IdTable.from_ids(np.array(IDS)) == IdTable.from_ids(IDS)


def test_hash_collisions_cost_time_not_correctness(monkeypatch):
    real = id_table._hash
    monkeypatch.setattr(id_table, "_hash", lambda off, data, lo, hi: real(off, data, lo, hi) & np.uint64(3))
    t = IdTable.from_ids([f"id{i}" for i in range(200)])
    assert t.rows_of([f"id{i}" for i in range(0, 200, 7)] + ["id200"]).tolist() == list(range(0, 200, 7)) + [-1]
    assert t.duplicate() is None and IdTable.from_ids(["q", "r", "s", "q"]).duplicate() == (0, 3)


def test_non_string_id_refused():
    with pytest.raises(TypeError, match="position 1"):
        IdTable.from_ids(["a", 7])


def test_fixed_width_gather_equals_variable_width_gather():
    """Ids of one width take the [n, width] matrix path; the result equals the general per-byte path's."""
    fixed = [f"i{i:05d}" for i in range(300)]
    rows = np.random.default_rng(0).permutation(300)[:120]
    got = IdTable.from_ids(fixed).take(rows)
    assert got.tolist() == [fixed[r] for r in rows] and got.rows_of(fixed[:5]).tolist() == \
        [int(np.flatnonzero(rows == r)[0]) if r in rows else -1 for r in range(5)]
    off, data = id_table.encode_ids(fixed)
    new, out = id_table.gather_ids(off, data, rows)
    mixed_off, mixed_data = id_table.encode_ids(fixed + ["longer-id"])  # one other width: the general path
    new2, out2 = id_table.gather_ids(mixed_off, mixed_data, rows)
    assert np.array_equal(new, new2) and np.array_equal(out, out2)
    empty_rows = id_table.gather_ids(off, data, np.zeros(0, dtype=np.int64))
    assert empty_rows[0].tolist() == [0] and empty_rows[1].shape == (0,)
