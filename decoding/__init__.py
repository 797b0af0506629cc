"""Trie-constrained decoding: the index of valid item token sequences and the LogitsProcessor that enforces it."""
