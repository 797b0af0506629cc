"""Inference over conversations: load a model dir (+ adapter), load and check the trie index, write predictions.

    dlsearch generate --model runs/m --index runs/m/trie --input conversations.jsonl --beams 20 --k 10 --out preds.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from data.catalog import Catalog, load_catalog_jsonl
from data.formats import Conversation, Prediction, ScoredItem, load_conversations, save_predictions
from data.prompts import apply_chat_template, prompt_for_context, render_conversation
from decoding.direct import DirectSearch, SearchStats
from decoding.index import TrieIndex

TASK = "conversation->item"


def load_model(model_dir: str | Path, adapter: str | Path | None = None, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a model dir written by finetune (HF dir + manifest.json, tokenizer files) and, if given, a peft adapter.

    With an `adapter/` subdirectory and no explicit adapter, that adapter is used on the manifest's base_model.
    Raises FileNotFoundError / ValueError naming what is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    manifest = _read_manifest(model_dir)
    if adapter is None and (model_dir / "adapter").exists():
        adapter = model_dir / "adapter"
    if adapter is not None:
        base = manifest.get("base_model")
        if not base:
            raise ValueError(f"{model_dir / 'manifest.json'}: an adapter needs 'base_model' (a local model dir)")
        model = AutoModelForCausalLM.from_pretrained(base)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tok_dir = model_dir if (model_dir / "tokenizer_config.json").exists() else Path(manifest.get("base_model", model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    p = model_dir / "manifest.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def conversation_prompt(conv: Conversation, catalog: Catalog, tokenizer: Any | None = None) -> str:
    """The conversation->item prompt with @<id> mentions rendered as titles (the training template)."""
    render = lambda iid: catalog[iid].title if iid in catalog else iid  # noqa: E731
    prompt = prompt_for_context(TASK, render_conversation(conv, render))
    return apply_chat_template(tokenizer, prompt) if tokenizer is not None else prompt


def to_predictions(ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, catalog: Catalog,
                   strategy: str = "direct") -> list[Prediction]:
    out = []
    for cid, sc, rw in zip(ids, scores, rows):
        items = [ScoredItem(catalog.items[int(r)].id, float(s), rank, strategy)
                 for rank, (s, r) in enumerate(((s, r) for s, r in zip(sc, rw) if r >= 0), start=1)]
        out.append(Prediction(cid, items))
    return out


def recommend(conv: Conversation, search: DirectSearch, k: int = 10, *, exclude_mentioned: bool = True) -> Prediction:
    """Ranked items for one conversation (items it already mentions or excludes are masked out)."""
    exclude = list(dict.fromkeys(list(conv.exclude) + (conv.mentioned() if exclude_mentioned else [])))
    scores, rows = search.search([conversation_prompt(conv, search.catalog, search.tokenizer)], k, exclude=[exclude])
    return to_predictions([conv.id], scores, rows, search.catalog)[0]


def generate_predictions(model_dir: str | Path, index_dir: str | Path, input_path: str | Path, out_path: str | Path,
                         *, adapter: str | Path | None = None, catalog_path: str | Path | None = None, beams: int = 20,
                         k: int = 10, batch_size: int = 8, exclude_mentioned: bool = True,
                         limit: int | None = None) -> dict[str, Any]:
    """Run constrained beam search over a conversations file and write predictions JSONL. Returns the stats dict
    (valid-item rate, duplicate rate, counts) that the CLI prints."""
    from tqdm import tqdm

    model, tokenizer = load_model(model_dir, adapter)
    index_dir = Path(index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    catalog_path = catalog_path or manifest.get("catalog_path")
    if not catalog_path:
        raise ValueError(f"{index_dir / 'manifest.json'} records no catalog_path; pass --catalog")
    catalog = load_catalog_jsonl(catalog_path)
    index = TrieIndex.load(index_dir, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    convs = load_conversations(input_path)[:limit]
    search = DirectSearch(model, tokenizer, index, catalog, beams=beams, batch_size=batch_size)
    prompts = [conversation_prompt(c, catalog, tokenizer) for c in convs]
    exclude = [list(dict.fromkeys(list(c.exclude) + (c.mentioned() if exclude_mentioned else []))) for c in convs]
    with tqdm(total=len(prompts), desc="generate", unit="conv") as bar:
        scores, rows, stats = search.search_with_stats(prompts, k, exclude=exclude, progress=bar)
    save_predictions(out_path, to_predictions([c.id for c in convs], scores, rows, catalog))
    return {"conversations": len(convs), "out": str(out_path), **stats.as_dict()}


__all__ = ["load_model", "conversation_prompt", "recommend", "generate_predictions", "to_predictions", "SearchStats"]
