"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

    atomic_write_text(out / "manifest.json", json.dumps(man, indent=2))
    with atomic_path(out / "x.safetensors") as tmp: save_file(arrays, str(tmp))   # a writer that takes a path

The data goes to a temporary file in the same directory (unique per call, so two writers never share it), is
flushed to disk, then renamed over the target (os.replace is atomic on POSIX and Windows).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that needs a file name (safetensors' save_file); when the block
    ends without an error the file is synced and renamed over `path`, otherwise removed.

        with atomic_path(out / "trie.safetensors") as tmp:
            save_file(arrays, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the files we write are ordinary readable outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent dirs created). Returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """json.dumps(obj, **dumps) written atomically (indent=2 unless given)."""
    return atomic_write_text(path, json.dumps(obj, **{"indent": 2, **dumps}))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks (model weights can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
