"""The application: what the command line runs on top of the libraries (data, finetune, decoding, retrieval,
evaluation). Loads models and indexes, wires strategies together (router, evaluation runner, sweep, quickstart)
and serves them over HTTP. Libraries never import from here."""
