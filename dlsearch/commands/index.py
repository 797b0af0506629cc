"""`dlsearch index build --kind KIND`: one verb, a builder per kind.

    dlsearch index build --kind bm25|concept|dual ...    (retrieval: dlsearch/commands/index_retrieval.py)
"""

from __future__ import annotations

import argparse

from dlsearch.commands import index_retrieval

# kind -> (add_arguments, build); other areas add their kinds here (e.g. decoding's "trie").
BUILDERS = {kind: index_retrieval for kind in index_retrieval.KINDS}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build search indexes over a catalog")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="VERB")
    b = isub.add_parser("build", help="build one index kind", conflict_handler="resolve")
    b.add_argument("--kind", required=True, choices=sorted(BUILDERS))
    for mod in dict.fromkeys(BUILDERS.values()):
        mod.add_arguments(b)
    b.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    return BUILDERS[args.kind].build(args)
