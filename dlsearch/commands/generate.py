"""`dlsearch generate`: constrained beam search over conversations, writing ranked predictions.

    dlsearch generate --model runs/m --index runs/m/trie --input conversations.jsonl --beams 20 --k 10 --out preds.jsonl
"""

from __future__ import annotations

import argparse
import json

from dlsearch.commands import output_file, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="recommend catalog items for conversations with trie-constrained decoding")
    p.add_argument("--model", required=True, help="model dir: fine-tuned (manifest.json), imported (dlsearch model import) or any local HF causal-LM dir")
    p.add_argument("--adapter", help="peft adapter dir to load onto --model as its base")
    p.add_argument("--index", required=True, help="trie index dir (dlsearch index build --kind trie)")
    p.add_argument("--input", required=True, help="conversations JSONL")
    p.add_argument("--out", required=True, help="predictions JSONL to write")
    p.add_argument("--catalog", help="catalog JSONL (default: the one recorded in the index manifest)")
    p.add_argument("--beams", type=positive_int, default=20, help="beam width; more beams = better recall, slower")
    p.add_argument("--k", type=positive_int, default=10, help="items per conversation")
    p.add_argument("--batch-size", type=positive_int, default=8, help="conversations per generate call")
    p.add_argument("--limit", type=positive_int, help="only the first N conversations")
    p.add_argument("--resume", action="store_true", help="keep OUT's finished lines and generate only for the conversations not in it")
    p.add_argument("--keep-mentioned", action="store_true", help="allow items already mentioned in the conversation")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from dlsearch.data.formats import load_conversations
    from dlsearch.decoding.generate import generate_predictions, index_catalog
    from dlsearch.finetune.loading import load_model

    output_file(args.out)
    convs = load_conversations(args.input)  # a bad line is named before the model and the index are loaded
    catalog = index_catalog(args.index, args.catalog)
    model, tokenizer, _ = load_model(args.model, adapter=args.adapter, catalog=catalog)
    stats = generate_predictions(model, tokenizer, catalog, args.index, convs, args.out, beams=args.beams, k=args.k,
                                 batch_size=args.batch_size, exclude_mentioned=not args.keep_mentioned, limit=args.limit,
                                 resume=args.resume, model_dir=args.adapter or args.model)
    print(json.dumps(stats, indent=2))
    return 0
