"""The router: run direct search and the fallbacks a policy allows, degrade on failures, fuse with RRF.

    router = Router(catalog, {"direct": direct, "dual": dual, "bm25": bm25}, Policy(), memorization=mem)
    pred = router.recommend(conversation, k=10)       # Prediction; every ScoredItem names its strategy

Policy (see configs/recommend.yaml, every field commented there):
  * direct search runs only while the catalog is small enough (`direct_max_items`) and the model's measured
    memorization of THIS catalog version (exact match of title->id, from `<model_dir>/memorization.json`, keyed by
    catalog content hash) reaches `min_exact_match`; with no measurement, `unmeasured` decides ("fallback": run it
    fused with the fallbacks; "skip": do not run it);
  * at or above `direct_alone_at`, direct answers alone and fallbacks run only if it fails or returns nothing;
  * a strategy that fails (search API down, timeout, HTTP 500, malformed JSON) is dropped for the conversations it
    failed for, and only those: each such Prediction names it in `degraded` (strategy -> reason), the failure counts
    go to `router.decisions`, the other strategies still answer; no failure raises (retrieval.strategy);
  * the remaining lists are fused with reciprocal rank fusion (per-strategy weights); a fused item's strategy is
    "a+b" listing contributors by contribution, its score the RRF score; a single list keeps its own scores.
Titles written as plain text in the conversation are linked to items first (`policy.link_mentions`,
retrieval/mentions.py) and join `exclude`. Items in `conversation.exclude` and their duplicate groups (data/titles.py) are removed, and no answer holds two
members of one group (strategies are asked for k + len(exclude) + overfetch candidates, except
those with `masks_exclusions = True`, such as direct search, which never return them and are asked for k).
An allow list (`conversation.meta["allow"]`, item ids) keeps only those items: a strategy with `masks_allow = True`
(direct search: a mask in the trie) searches among them, any other ranks the whole catalog so that k allowed items
are found whenever it ranks k of them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation, Prediction, ScoredItem
from dlsearch.data.titles import titles_of
from dlsearch.retrieval.embedding import conversation_text
from dlsearch.retrieval.fusion import RRF_K, rrf
from dlsearch.retrieval.mentions import link_conversation, linker_for
from dlsearch.retrieval.shape import check_k, empty_result, topk_from_lists
from dlsearch.retrieval.strategy import SearcherStrategy, Strategy, StrategyResult, allow_list, as_strategy, describe

log = logging.getLogger(__name__)

UNMEASURED = ("fallback", "skip", "trust")


@dataclass
class Policy:
    direct_max_items: int = 50_000
    min_exact_match: float = 0.5
    direct_alone_at: float = 0.95
    unmeasured: str = "fallback"
    rrf_k: float = RRF_K
    overfetch: int = 20
    weights: dict[str, float] = field(default_factory=dict)
    link_mentions: bool = True  # titles written as plain text are linked (retrieval/mentions.py) and excluded

    def __post_init__(self) -> None:  # "field: why": the config validator puts the dotted path in front
        if self.unmeasured not in UNMEASURED:
            raise ValueError(f"unmeasured: must be one of {UNMEASURED}, got {self.unmeasured!r}")
        for name in ("min_exact_match", "direct_alone_at"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0 + 1e-9:
                raise ValueError(f"{name}: must be in [0, 1], got {v}")
        for name in ("overfetch", "direct_max_items"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.rrf_k <= 0:
            raise ValueError(f"rrf_k: must be > 0, got {self.rrf_k}")
        negative = {n: w for n, w in self.weights.items() if w < 0}
        if negative:  # a negative RRF weight would push a strategy's best items to the bottom
            raise ValueError(f"weights: must be >= 0, got {negative}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "policy") -> "Policy":
        """Unknown keys (with the closest valid name) and wrong types are a ConfigError naming `where` and the key."""
        from dlsearch.data.config import from_dict

        return from_dict(cls, d, where)


def load_memorization(model_dir: str | Path, catalog_hash: str) -> dict[str, Any] | None:
    """The memorization record for this catalog version from `<model_dir>/memorization.json`, or None."""
    path = Path(model_dir) / "memorization.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    rec = data.get(catalog_hash) if isinstance(data, dict) else None
    if rec is not None and not isinstance(rec.get("exact_match"), (int, float)):
        raise ValueError(f"{path}: entry {catalog_hash[:12]} lacks a numeric 'exact_match'")
    return rec


class Router:
    """Picks and fuses strategies per the policy; `recommend_many` batches each strategy over conversations.

    The router is itself a strategy (retrieval.strategy): `search(convs, k)` returns the fused ranking with one error
    field per conversation, set only when every strategy failed for that conversation."""

    name = "router"
    masks_exclusions = True  # it removes each conversation's `exclude` itself
    masks_allow = True  # and keeps only each conversation's allow list

    def __init__(
        self,
        catalog: Catalog,
        strategies: dict[str, Strategy | Any],
        policy: Policy | None = None,
        *,
        memorization: dict[str, Any] | None = None,
    ):
        self.catalog, self.policy, self.memorization = catalog, policy or Policy(), memorization
        # a plain searcher reads the rendered conversation text; direct search reads the conversation itself
        text = lambda conv: conversation_text(conv, self.catalog)  # noqa: E731
        self.strategies: dict[str, Strategy] = {
            n: as_strategy(n, s, to_query=None if n == "direct" else text) for n, s in strategies.items()
        }
        if not self.strategies:
            raise ValueError("the router needs at least one strategy")
        self.decisions: list[dict[str, Any]] = []
    # -- policy -----------------------------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """Which strategies run and why, from corpus size and memorization (availability is checked at run time)."""
        p, reasons = self.policy, []
        fallbacks = [n for n in self.strategies if n != "direct"]
        direct, alone = "direct" in self.strategies, False
        if direct:
            n = len(self.catalog)
            em = None if self.memorization is None else float(self.memorization["exact_match"])
            if n > p.direct_max_items:
                direct = False
                reasons.append(f"direct skipped: catalog has {n} items > direct_max_items {p.direct_max_items}")
            elif em is None:
                if p.unmeasured == "skip":
                    direct = False
                    reasons.append("direct skipped: no memorization measured for this catalog version (unmeasured: skip)")
                else:
                    alone = p.unmeasured == "trust"
                    reasons.append(f"no memorization measured for this catalog version: direct runs ({p.unmeasured})")
            elif em < p.min_exact_match:
                direct = False
                reasons.append(f"direct skipped: memorization exact_match {em:.3f} < min_exact_match {p.min_exact_match}")
            elif em >= p.direct_alone_at:
                alone = True
                reasons.append(f"direct alone: memorization exact_match {em:.3f} >= direct_alone_at {p.direct_alone_at}")
            else:
                reasons.append(f"direct fused with fallbacks: exact_match {em:.3f} in [{p.min_exact_match}, {p.direct_alone_at})")
        run = (["direct"] if direct else []) + ([] if alone else fallbacks)
        return {"run": run, "direct_alone": alone, "fallbacks": fallbacks, "reasons": reasons}

    # -- running ----------------------------------------------------------------------------------------------
    def _run(self, name: str, convs: Sequence[Conversation], k: int) -> StrategyResult:
        strategy = self.strategies[name]
        kk = k if strategy.masks_exclusions else k + max(len(c.exclude) for c in convs) + self.policy.overfetch
        if any(allow_list(c) is not None for c in convs) and not getattr(strategy, "masks_allow", False):
            kk = len(self.catalog)  # the allowed items may rank anywhere: the whole ranking, `_finish` keeps them
        try:
            res = strategy.search(convs, kk)
        except Exception as e:  # a strategy that fails as a whole (e.g. cannot be reached): every conversation degrades
            scores, rows = empty_result(len(convs), kk)
            res = StrategyResult(scores, rows, [describe(e)] * len(convs))
        for i in res.failed:
            log.warning("strategy %s failed for conversation %s, degrading to the others: %s", name, convs[i].id, res.errors[i])
        return res

    def recommend_many(self, convs: Sequence[Conversation], k: int) -> list[Prediction]:
        """One Prediction per conversation (same order), never an exception for a strategy's failure: a strategy
        that fails for a conversation is dropped for that conversation only and named in its `degraded` field
        (empty items when every strategy failed). The plan and per-strategy failure counts go to self.decisions."""
        k = check_k(k)
        if not convs:
            return []
        if self.policy.link_mentions:  # before any strategy runs: every one gets the linked items as mentioned
            linker = linker_for(self.catalog)
            convs = [link_conversation(c, linker) for c in convs]
        else:  # `exclude` then holds Conversation.exclusions() either way: @id mentions are never recommended back
            convs = [replace(c, exclude=c.exclusions()) for c in convs]
        plan = self.plan()
        results = {name: self._run(name, convs, k) for name in plan["run"]}
        if plan["direct_alone"]:  # fallbacks only for the conversations direct search failed or returned nothing for
            direct = results["direct"]
            need = [i for i in range(len(convs)) if direct.errors[i] is not None or (direct.rows[i] < 0).all()]
            if need:
                plan["reasons"].append(f"direct alone failed or returned nothing for {len(need)} conversation(s): running fallbacks for them")
                for name in plan["fallbacks"]:
                    sub = self._run(name, [convs[i] for i in need], k)
                    full = StrategyResult(*empty_result(len(convs), sub.rows.shape[1]), [None] * len(convs))
                    full.scores[need], full.rows[need] = sub.scores, sub.rows
                    for j, i in enumerate(need):
                        full.errors[i] = sub.errors[j]
                    results[name] = full
        failures = {n: len(r.failed) for n, r in results.items() if r.failed}
        preds = [self._finish(conv, i, results, k) for i, conv in enumerate(convs)]
        self.decisions.append({**plan, "used": list(results), "failures": failures, "conversations": len(convs),
                               "ids": [c.id for c in convs], "degraded": {p.id: p.degraded for p in preds if p.degraded}})
        return preds

    def _finish(self, conv: Conversation, i: int, results: dict[str, StrategyResult], k: int) -> Prediction:
        titles = titles_of(self.catalog)
        excluded = titles.excluded_rows(conv.exclude)  # excluding one member of a duplicate group excludes the group
        degraded = {n: res.errors[i] for n, res in results.items() if res.errors[i] is not None}
        names = [n for n in results if n not in degraded]
        allow = allow_list(conv)
        allowed = None if allow is None else np.array([self.catalog.index(x) for x in allow if x in self.catalog], np.int64)
        lists = []
        for name in names:
            s, r = results[name].scores, results[name].rows
            keep = titles.keep(r[i], excluded)  # also one member per duplicate group
            if allowed is not None:
                keep = [j for j, ok in zip(keep, np.isin(r[i][keep], allowed)) if ok]
            lists.append((s[i : i + 1, keep], r[i : i + 1, keep]))
        items: list[ScoredItem] = []
        nonempty = [j for j, (_, r) in enumerate(lists) if r.shape[1] > 0]
        if len(nonempty) == 1:  # one list: keep its own scores
            j = nonempty[0]
            s, r = lists[j]
            for rank, (sc, row) in enumerate(zip(s[0][:k], r[0][:k]), start=1):
                items.append(ScoredItem(self.catalog.items[int(row)].id, float(sc), rank, names[j]))
        elif nonempty:
            weights = [self.policy.weights.get(n, 1.0) for n in names]
            padded = [(s, r) if r.shape[1] else (np.full((1, 1), -np.inf, np.float32), np.full((1, 1), -1, np.int64)) for s, r in lists]
            depth = sum(r.shape[1] for _, r in padded)  # fuse everything, then keep one member per group
            s, r, sources = rrf(padded, depth, rrf_k=self.policy.rrf_k, weights=weights)
            for rank, j in enumerate(titles.keep(r[0])[:k], start=1):
                sc, row, src = s[0][j], r[0][j], sources[0][j]
                items.append(ScoredItem(self.catalog.items[int(row)].id, float(sc), rank, "+".join(names[x] for x in src)))
        return Prediction(conv.id, items, degraded=degraded)

    def search(self, convs: Sequence[Conversation], k: int) -> StrategyResult:
        """The router as a strategy (fused scores, catalog rows); a conversation's error is set only when every
        strategy failed for it."""
        preds = self.recommend_many(convs, k)
        scores, rows = topk_from_lists([[(self.catalog.index(s.item_id), s.score) for s in p.items] for p in preds], k)
        errors = [None if p.items or not p.degraded else "every strategy failed: " + "; ".join(f"{n}: {e}" for n, e in p.degraded.items())
                  for p in preds]
        return StrategyResult(scores, rows, errors)

    def recommend(self, conversation: Conversation, k: int = 10) -> Prediction:
        """Top-k items for one conversation; each ScoredItem carries its strategy and score."""
        return self.recommend_many([conversation], k)[0]
