"""How an item is rendered as text for lexical search.

`data.encoder.item_text` is the one rendering for embedding (title + concepts + text); BM25 uses the same words so
a query matches the same fields whichever engine answers it.
"""

from __future__ import annotations

from data.catalog import Item


def item_text(item: Item) -> str:
    """Title, then concepts, then free text: 'Toy Story (1995). Animation, Comedy. ...'."""
    parts = [item.title]
    if item.concepts:
        parts.append(", ".join(item.concepts))
    if item.text:
        parts.append(item.text)
    return ". ".join(parts)
