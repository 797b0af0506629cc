"""The sweep's steps, each a call into another area's public functions (finetune, decoding, retrieval).

    steps = default_steps()          # what `dlsearch sweep` uses
    run_sweep(cfg, steps)

Fallbacks answer the held-out request text:
  bm25     retrieval.bm25 over item title + concepts + text;
  concept  retrieval.concept over item-text embeddings, queried with the concepts named in the request (the part in
           parentheses; in the full system a model generates them from the conversation);
  dual     retrieval.dual_encoder towers trained on one *training* request per item (evaluation.sweep.training_requests:
           another seed, held-out phrasings dropped), on frozen sentence-encoder features. Recipes with the finetune
           task `query->id` train the direct model on the same pairs (<point>/queries.jsonl), as DSI does.
Embeddings are cached in <out>/embeddings by content hash, so nested catalogs embed each item once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap
from dlsearch.app.sweep import SearchFn, SweepConfig, SweepSteps, training_requests

_CONCEPTS_RE = re.compile(r"\(([^()]*)\)\s*$")


def request_concepts(text: str) -> list[str]:
    """The concepts a request names in its trailing parentheses: 'heat (Action, Crime)' -> ['Action', 'Crime']."""
    m = _CONCEPTS_RE.search(text)
    return [c.strip() for c in m.group(1).split(",") if c.strip()] if m else []


def _embedding_cache(cfg: SweepConfig) -> str:
    return str(Path(cfg.out) / "embeddings")


def bm25_fallback(catalog: Catalog, work_dir: Path, cfg: SweepConfig) -> SearchFn:
    from dlsearch.retrieval.bm25 import build_bm25

    index = build_bm25(catalog)
    return lambda texts, k: index.search(list(texts), k)


def concept_fallback(catalog: Catalog, work_dir: Path, cfg: SweepConfig) -> SearchFn:
    from dlsearch.retrieval.concept import ConceptSearch, build_concept_index

    search = ConceptSearch(build_concept_index(catalog, cache_dir=_embedding_cache(cfg), show_progress=True),
                           aggregate=cfg.step_options.get("concept_aggregate", "mean"), cache_dir=_embedding_cache(cfg))
    return lambda texts, k: search.search([request_concepts(t) for t in texts], k)


def dual_fallback(catalog: Catalog, work_dir: Path, cfg: SweepConfig) -> SearchFn:
    from dlsearch.retrieval.dual_encoder import DualEncoderConfig, DualSearch, build_dual_index, train_dual_encoder
    from dlsearch.retrieval.embedding import embed_items, embed_texts

    cache = _embedding_cache(cfg)
    item_feats = embed_items(catalog, cache_dir=cache, show_progress=True)  # [n, d]
    pairs = training_requests(catalog, cfg)  # the direct model's query->id pairs: another seed, never a held-out phrasing
    ctx = embed_texts([t for t, _ in pairs], cache_dir=cache, show_progress=True)  # [n, d]
    targets = np.array([catalog.index(i) for _, i in pairs], dtype=np.int64)
    dcfg = DualEncoderConfig.from_dict({"seed": cfg.seed, **cfg.step_options.get("dual", {})}, where="step_options.dual")
    model = train_dual_encoder(ctx, targets, item_feats, dcfg, show_progress=False)
    search = DualSearch(model, build_dual_index(model, catalog, item_feats), cache_dir=cache)
    return lambda texts, k: search.search(list(texts), k)


FALLBACKS = {"bm25": bm25_fallback, "concept": concept_fallback, "dual": dual_fallback}


def fallback(name: str, catalog: Catalog, work_dir: Path, cfg: SweepConfig) -> SearchFn:
    """Build the named fallback on this point's catalog."""
    if name not in FALLBACKS:
        raise ValueError(f"unknown fallback {name!r}; available: {sorted(FALLBACKS)}")
    return FALLBACKS[name](catalog, work_dir, cfg)


def default_steps() -> SweepSteps:
    """The real steps: finetune (train, generate ids), decoding (direct search), retrieval (fallbacks, router)."""
    return SweepSteps(train=_train, generate_ids=_generate_ids, direct_search=_direct_search, fallback=fallback,
                      router=_router, version="2")  # 2: training requests shared with query->id, held-out phrasings dropped


# --- adapters to the model areas -------------------------------

def _train(catalog: Catalog, idmap: IdMap, out_dir: Path, cfg: SweepConfig) -> Path:
    """finetune.run_recipe on this point's prepared dir (catalog.jsonl + idmap.json next to out_dir), every stage
    run for cfg.epochs_per_item epochs; resumable (finetune's own checkpoints)."""
    from dlsearch.finetune.config import load_recipe
    from dlsearch.finetune.train import run_recipe

    if not cfg.recipe:
        raise ValueError("sweep config: recipe is empty; name a finetune recipe YAML (e.g. configs/sweep-recipe-cpu.yaml)")
    point_dir = out_dir.parent  # run_point saved catalog.jsonl and idmap.json there
    overrides = [f"data.dataset={point_dir}", f"output_dir={out_dir}", f"seed={cfg.seed}",
                 "eval.memorization=false",  # the sweep measures memorization itself, on its own sample
                 *cfg.recipe_overrides]
    recipe = load_recipe(cfg.recipe, overrides)
    for stage in recipe.stages:  # same passes over each item at every size: steps grow with the catalog
        stage.train.epochs = float(cfg.epochs_per_item)
        stage.train.max_steps = -1
    run_recipe(recipe, resume=True)
    return out_dir


def _generate_ids(model_dir: Path, catalog: Catalog, idmap: IdMap, titles: list[str]) -> list[str]:
    """Greedy, unconstrained title->id generations (finetune.memorization)."""
    from dlsearch.finetune.loading import load_model
    from dlsearch.finetune.memorization import code_token_budget, generate_ids

    model, tokenizer, _ = load_model(model_dir, catalog=catalog)
    return generate_ids(model, tokenizer, titles, max_new_tokens=code_token_budget(tokenizer, idmap))


def _direct_text_search(model_dir: Path, catalog: Catalog, idmap: IdMap, cfg: SweepConfig, k: int) -> Any:
    """decoding.direct.DirectSearch over a title->id trie index, with the request text as the title->id prompt."""
    from dlsearch.data.prompts import apply_chat_template, prompt_for_item_task
    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.loading import load_model

    model, tokenizer, _ = load_model(model_dir, catalog=catalog)
    engine = DirectSearch(model, tokenizer, build_index(catalog, idmap, tokenizer), catalog, beams=max(int(cfg.step_options.get("num_beams", 10)), k))

    class _Search:
        name = "direct"

        def search(self, texts: Sequence[str], kk: int) -> tuple[np.ndarray, np.ndarray]:
            prompts = [apply_chat_template(tokenizer, prompt_for_item_task("title->id", title=t)["prompt"]) for t in texts]
            return engine.search(prompts, kk)

    return _Search()


def _direct_search(model_dir: Path, catalog: Catalog, idmap: IdMap, texts: Sequence[str], k: int, cfg: SweepConfig) -> tuple[np.ndarray, np.ndarray]:
    """Constrained beam search (decoding.direct) with the title->id prompt holding the request text."""
    return _direct_text_search(model_dir, catalog, idmap, cfg, k).search(list(texts), k)


def _router(model_dir: Path, catalog: Catalog, idmap: IdMap, fallbacks: dict[str, SearchFn], memorization: dict[str, Any],
            work_dir: Path, cfg: SweepConfig) -> SearchFn:
    """retrieval.router.Router over direct search and the fallbacks, its policy fed this point's measured
    memorization; each request becomes a one-message conversation and every strategy reads the bare request text."""
    from dlsearch.data.formats import Conversation, Message
    from dlsearch.retrieval.router import Policy, Router
    from dlsearch.retrieval.strategy import SearcherStrategy

    text_of = lambda conv: conv.messages[-1].content  # noqa: E731
    strategies = {"direct": SearcherStrategy("direct", _direct_text_search(model_dir, catalog, idmap, cfg, cfg.k), text_of)}
    strategies.update({n: SearcherStrategy(n, fn, text_of) for n, fn in fallbacks.items()})
    policy = Policy.from_dict(dict(cfg.step_options.get("router_policy", {})), where="step_options.router_policy")
    router = Router(catalog, strategies, policy, memorization=memorization)

    def search(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        convs = [Conversation(f"r{i}", [Message("user", t)]) for i, t in enumerate(texts)]
        return tuple(router.search(convs, k))

    return search
