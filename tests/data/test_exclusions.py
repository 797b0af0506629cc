"""One exclusion formula (Conversation.exclusions), used by direct search, generate, retrieval's direct strategy and
mention linking."""

from __future__ import annotations

import ast
from pathlib import Path

from dlsearch.data.formats import Conversation, Message

ROOT = Path(__file__).resolve().parents[2]


def test_exclusions_are_exclude_then_mentions_each_once() -> None:
    conv = Conversation(id="c", messages=[Message("user", "I liked @12 and @7, then @12 again"), Message("assistant", "@9?")],
                        exclude=["7", "3"])
    assert conv.exclusions() == ["7", "3", "12", "9"]
    assert conv.exclusions(mentioned=False) == ["7", "3"]


def test_no_module_writes_the_formula_out_again() -> None:
    """`list(x.exclude) + x.mentioned()` anywhere but data/formats.py is a second copy that can drift."""
    copies = []
    for folder in ("data", "decoding", "retrieval", "evaluation", "finetune", "dlsearch"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "formats.py" and folder == "data":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
                        and "exclude" in ast.unparse(node.left) and "mentioned()" in ast.unparse(node.right)):
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert copies == []
