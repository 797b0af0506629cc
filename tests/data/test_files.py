"""Atomic writes (data/files.py): the old content survives a failed write, no temporary file is left behind."""

from __future__ import annotations

import json
import os

import pytest

from dlsearch.data import files
from dlsearch.data.files import atomic_path, atomic_write_json, atomic_write_text


def test_write_and_overwrite(tmp_path) -> None:
    p = tmp_path / "sub" / "m.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2} and sorted(x.name for x in p.parent.iterdir()) == ["m.json"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    p = tmp_path / "manifest.json"
    atomic_write_text(p, "old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["manifest.json"]


def test_resume_path_manifests_are_written_atomically() -> None:
    """The manifests a resumed run reads (stage, merged export, imported base) go through data/files.py."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for rel in ("finetune/train.py", "finetune/importing.py", "finetune/manifest.py", "finetune/memorization.py",
                "data/prepare.py", "data/encoder.py", "decoding/index.py", "decoding/trie.py"):
        src = (root / rel).read_text()
        assert "MANIFEST).write_text(" not in src and ".tmp\")" not in src and ".tmp\"" not in src, rel


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path) -> None:
    """safetensors' save_file writes to a name: atomic_path gives it one, renames on success, removes on failure."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    p = tmp_path / "x.safetensors"
    with atomic_path(p) as tmp:
        save_file({"a": np.arange(3)}, str(tmp))
    assert load_file(str(p))["a"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half a fi")
            raise RuntimeError("killed")
    assert load_file(str(p))["a"].tolist() == [0, 1, 2] and [x.name for x in tmp_path.iterdir()] == ["x.safetensors"]
