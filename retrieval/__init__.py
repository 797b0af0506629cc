"""Fallback retrieval: concept search, dual encoder, search-API lookup, and the router that fuses them.

Every strategy returns the search shape (retrieval/shape.py): scores float32 [n, k] and catalog rows int64 [n, k],
padded with -inf / -1. See docs/retrieval.md.
"""
