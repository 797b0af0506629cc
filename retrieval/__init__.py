"""Fallback retrieval: concept search, dual encoder, search-API lookup, and the router that fuses them."""
