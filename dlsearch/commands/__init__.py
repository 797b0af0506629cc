"""One module per command group; each exposes `register(subparsers)` and sets `func` on its parsers.

Numeric flags use the argparse types below, so an out-of-range value is refused by argparse with a message naming
the flag (`argument --beams: must be >= 1, got 0`), before any work starts.
"""

from __future__ import annotations

from typing import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse `type=` for integers >= low."""
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def output_file(path: str, flag: str = "--out") -> str:
    """A file path to write at the end of a run, checked before the run: an existing directory there would
    otherwise fail only after all the compute (IsADirectoryError)."""
    from pathlib import Path

    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give the file to write, e.g. {Path(path) / 'predictions.jsonl'}")
    return path
