"""`tokenizer_fingerprint(tokenizer)`: one hash that changes whenever token ids would change.

An index stores token ids; loading it with a tokenizer that maps text to different ids would silently constrain the
model to garbage, so every index (and every model dir) records this fingerprint and loaders compare it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Probe strings exercise the normalizer and pre-tokenizer (leading space, digits, unicode, markup, newlines),
# which the vocabulary alone does not pin down.
PROBES = (" 12345", "Toy Story (1995)", "\n### Answer: The Matrix", "<item>Amélie</item>", "  two  spaces", "ABCDEFGHJK")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over the vocabulary (token -> id), the special/added tokens and the encodings of a few probe strings.

    Args:
        tokenizer: a transformers tokenizer (fast or slow).
    Returns:
        64-character hex digest.
    """
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode("utf-8"))
    specials = {
        "all_special_tokens": list(getattr(tokenizer, "all_special_tokens", [])),
        "bos": getattr(tokenizer, "bos_token_id", None),
        "eos": getattr(tokenizer, "eos_token_id", None),
        "pad": getattr(tokenizer, "pad_token_id", None),
    }
    h.update(json.dumps(specials, sort_keys=True, default=str).encode("utf-8"))
    for p in PROBES:
        h.update(json.dumps(tokenizer.encode(p, add_special_tokens=False)).encode("utf-8"))
    return h.hexdigest()
