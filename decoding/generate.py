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
from dlsearch.data.prompts import apply_chat_template
from dlsearch.data.prompts import conversation_prompt as render_prompt
from dlsearch.decoding.direct import DirectSearch, SearchStats
from dlsearch.decoding.index import TrieIndex

TASK = "conversation->item"


def conversation_prompt(conv: Conversation, catalog: Catalog, tokenizer: Any | None = None, *,
                        max_messages: int | None = None, max_length: int | None = None, reserve: int = 0) -> str:
    """The conversation->item prompt with mentions rendered as titles: data.prompts.conversation_prompt, the
    function training examples are rendered with; max_messages keeps the last N messages, as the recipe's
    data.max_messages did in training (None: all). With max_length (and a tokenizer), the context is cut from
    the left to leave `reserve` tokens for the answer: the length policy training applied (fit_context_prompt)."""
    if max_length is not None and tokenizer is not None:
        from dlsearch.data.prompts import conversation_parts, fit_context_prompt, prompt_for_context

        parts = conversation_parts(conv, catalog, max_messages=max_messages)
        prompt, _ = fit_context_prompt(TASK, parts, tokenizer, max_length - reserve)
        prompt = prompt if prompt is not None else prompt_for_context(TASK, "")
        return apply_chat_template(tokenizer, prompt)
    prompt = render_prompt(conv, catalog, TASK, max_messages=max_messages)
    return apply_chat_template(tokenizer, prompt) if tokenizer is not None else prompt


def trained_max_length(model: Any) -> int | None:
    """The max_length the model was fine-tuned with (its manifest's stage.length_policy), else its position limit."""
    path = Path(str(getattr(model, "name_or_path", "") or "")) / "manifest.json"
    if path.is_file():
        policy = (json.loads(path.read_text(encoding="utf-8")).get("stage") or {}).get("length_policy") or {}
        if policy.get("max_length"):
            return int(policy["max_length"])
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


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


def generate_predictions(model: Any, tokenizer: Any, catalog: Catalog, index_dir: str | Path, input_path: str | Path,
                         out_path: str | Path, *, beams: int = 20, k: int = 10, batch_size: int = 8,
                         exclude_mentioned: bool = True, limit: int | None = None, resume: bool = False) -> dict[str, Any]:
    """Run constrained beam search over a conversations file, appending predictions JSONL batch by batch (`resume`:
    keep the lines already written, cut a torn last line, do only the rest). Returns the stats dict (valid-item
    rate, duplicate rate, counts) that the CLI prints."""
    from tqdm import tqdm

    index = TrieIndex.load(index_dir, tokenizer=tokenizer, catalog_hash=catalog.content_hash())
    convs = load_conversations(input_path)[:limit]
    search = DirectSearch(model, tokenizer, index, catalog, beams=beams, batch_size=batch_size)
    stats = SearchStats()
    # each finished batch is appended and flushed: a killed run keeps them and `resume` skips them
    with PredictionLog(out_path, resume=resume) as out, tqdm(total=len(convs), desc="generate", unit="conv") as bar:
        todo = [c for c in convs if c.id not in out.done]
        bar.update(len(convs) - len(todo))
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo : lo + batch_size]
            prompts = [conversation_prompt(c, catalog, tokenizer, max_length=search.max_length, reserve=search.max_new_tokens) for c in chunk]
            exclude = [c.exclusions(mentioned=exclude_mentioned) for c in chunk]
            scores, rows, st = search.search_with_stats(prompts, k, exclude=exclude, progress=bar)
            out.write(to_predictions([c.id for c in chunk], scores, rows, catalog))
            stats.add(st)
    return {"conversations": len(convs), "written": len(todo), "skipped_already_written": len(convs) - len(todo),
            "out": str(out_path), **stats.as_dict()}


__all__ = ["index_catalog", "conversation_prompt", "recommend_for_conversation", "generate_predictions", "to_predictions", "SearchStats"]
