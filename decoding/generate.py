"""Inference over conversations: check the trie index against the model's tokenizer, write predictions.

    dlsearch generate --model runs/m --index runs/m/trie --input conversations.jsonl --beams 20 --k 10 --out preds.jsonl

The model and tokenizer come from the caller (the command loads them with dlsearch.finetune.loading.load_model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.formats import Conversation, Prediction, PredictionLog, ScoredItem, load_conversations, save_predictions
from dlsearch.decoding.direct import TASK, DirectSearch, SearchStats, conversation_prompt, trained_max_length  # noqa: F401 (re-exported)
from dlsearch.decoding.index import TrieIndex

def to_predictions(ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, catalog: Catalog,
                   strategy: str = "direct") -> list[Prediction]:
    out = []
    for cid, sc, rw in zip(ids, scores, rows):
        items = [ScoredItem(catalog.items[int(r)].id, float(s), rank, strategy)
                 for rank, (s, r) in enumerate(((s, r) for s, r in zip(sc, rw) if r >= 0), start=1)]
        out.append(Prediction(cid, items))
    return out


def recommend_for_conversation(conv: Conversation, search: DirectSearch, k: int = 10, *, exclude_mentioned: bool = True) -> Prediction:
    """Ranked items for one conversation (items it already mentions or excludes are masked out)."""
    exclude = conv.exclusions(mentioned=exclude_mentioned)
    prompt = conversation_prompt(conv, search.catalog, search.tokenizer, max_length=search.max_length, reserve=search.max_new_tokens)
    scores, rows = search.search([prompt], k, exclude=[exclude])
    return to_predictions([conv.id], scores, rows, search.catalog)[0]


def index_catalog(index_dir: str | Path, catalog_path: str | Path | None = None) -> Catalog:
    """The catalog a trie index was built for: catalog_path, else the one its manifest records."""
    index_dir = Path(index_dir)
    if not (index_dir / "manifest.json").exists():
        raise FileNotFoundError(f"{index_dir / 'manifest.json'}: missing; build it with `dlsearch index build --kind trie`")
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    if catalog_path is None:
        recorded = manifest.get("catalog_path")
        if not recorded:
            raise ValueError(f"{index_dir / 'manifest.json'} records no catalog_path; pass --catalog")
        # new manifests store it relative to the index dir; older ones relative to where the index was built
        catalog_path = index_dir / recorded if (index_dir / recorded).is_file() else Path(recorded)
    return load_catalog_jsonl(catalog_path)


def generate_predictions(model: Any, tokenizer: Any, catalog: Catalog, index_dir: str | Path,
                         input_path: str | Path | Sequence[Conversation],
                         out_path: str | Path, *, beams: int = 20, k: int = 10, batch_size: int = 8,
                         exclude_mentioned: bool = True, limit: int | None = None, resume: bool = False,
                         model_dir: str | Path | None = None) -> dict[str, Any]:
    """Run constrained beam search over a conversations file, appending predictions JSONL batch by batch (`resume`:
    keep the lines already written, cut a torn last line, do only the rest). Returns the stats dict (valid-item
    rate, duplicate rate, counts) that the CLI prints. input_path: a conversations JSONL, or conversations already
    loaded from one. model_dir: the fine-tuned dir (or adapter dir) whose manifest records the training window
    (the last data.max_messages messages, the max_length contexts were cut to): prompts are rendered with it."""
    from tqdm import tqdm

    index = TrieIndex.load(index_dir, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    convs = list(load_conversations(input_path) if isinstance(input_path, (str, Path)) else input_path)[:limit]
    search = DirectSearch(model, tokenizer, index, catalog, beams=beams, batch_size=batch_size, model_dir=model_dir)
    stats = SearchStats()
    # each finished batch is appended and flushed: a killed run keeps them and `resume` skips them
    with PredictionLog(out_path, resume=resume) as out, tqdm(total=len(convs), desc="generate", unit="conv") as bar:
        todo = [c for c in convs if c.id not in out.done]
        bar.update(len(convs) - len(todo))
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo : lo + batch_size]
            prompts = [search.prompt(c) for c in chunk]  # the window and length policy the model was trained with
            exclude = [c.exclusions(mentioned=exclude_mentioned) for c in chunk]
            scores, rows, st = search.search_with_stats(prompts, k, exclude=exclude, progress=bar)
            out.write(to_predictions([c.id for c in chunk], scores, rows, catalog))
            stats.add(st)
    return {"conversations": len(convs), "written": len(todo), "skipped_already_written": len(convs) - len(todo),
            "out": str(out_path), **stats.as_dict()}


__all__ = ["index_catalog", "conversation_prompt", "recommend_for_conversation", "generate_predictions", "to_predictions", "SearchStats"]
