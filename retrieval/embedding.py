"""Item and query vectors from the project's sentence encoder (`data.encoder`), cached by content hash.

    vecs = embed_items(catalog, cache_dir=".cache/embeddings")        # [n_items, 384], item_text of each item
    text = conversation_text(conv, catalog)                             # what the context tower / BM25 read
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.encoder import encode_texts, encoder_fingerprint, item_text, load_encoder
from dlsearch.data.formats import Conversation
from dlsearch.data.prompts import render_conversation

MAX_MESSAGES = 8  # the encoder reads 256 word pieces; the last turns carry the request, older ones get truncated


def embed_items(catalog: Catalog, *, encoder: Any = None, cache_dir: str | None = None, show_progress: bool = False) -> np.ndarray:
    """float32 [len(catalog), d], row i = item_text(catalog.items[i]); unchanged items are read from the cache."""
    return encode_texts([item_text(it) for it in catalog], encoder=encoder, cache_dir=cache_dir, show_progress=show_progress)


def embed_texts(texts: Sequence[str], *, encoder: Any = None, cache_dir: str | None = None, show_progress: bool = False) -> np.ndarray:
    """float32 [len(texts), d] L2-normalised; [0, d] for no texts."""
    return encode_texts(list(texts), encoder=encoder, cache_dir=cache_dir, show_progress=show_progress)


def encoder_info(encoder: Any = None, path: str | None = None) -> dict[str, Any]:
    """Manifest fields naming the encoder an index was built with (checked when a query is embedded)."""
    enc = encoder if encoder is not None else load_encoder(path)
    return {"encoder_path": path, "encoder_fingerprint": encoder_fingerprint(enc), "dim": enc.get_embedding_dimension()}


def conversation_text(conv: Conversation, catalog: Catalog | None = None, *, max_messages: int | None = MAX_MESSAGES) -> str:
    """'User: ...\\nAssistant: ...' of the last messages, mentions rendered as the item's title (data.prompts)."""
    from dlsearch.data.catalog import Catalog as _Catalog

    return render_conversation(conv, catalog if catalog is not None else _Catalog([]), max_messages=max_messages)
