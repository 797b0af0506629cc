"""One module per command group; each exposes `register(subparsers)` and sets `func` on its parsers."""
