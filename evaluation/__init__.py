"""Metrics, leakage-free protocols, and the memorization-vs-corpus-size sweep."""
