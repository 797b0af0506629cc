"""Re-export: the tokenizer fingerprint lives in data/fingerprint.py (finetune and decoding both stamp it; a neutral
home keeps finetune from importing decoding)."""

from dlsearch.data.fingerprint import PROBES, tokenizer_fingerprint  # noqa: F401
