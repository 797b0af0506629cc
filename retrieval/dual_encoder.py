"""A generalized dual encoder: context tower and item tower trained with a catalog softmax or in-batch negatives.

    pairs = conversation_pairs(train_convs, catalog) + history_pairs(histories, ml_catalog)
    model = train_dual_encoder(context_vecs, target_idx, item_vecs, DualEncoderConfig(epochs=5))
    index = build_dual_index(model, catalog, catalog_item_vecs)          # item tower vectors -> ANN
    search = DualSearch(model, index); search.search(["User: something like Alien"], k=10)

Both towers sit on top of frozen features so training runs in minutes on 2 CPU cores:
  context features: the sentence encoder's embedding of the rendered context (default), or an LLM's mean-pooled
                    last hidden states (`llm_features`, context_tower="llm") — frozen, cached by the caller;
  item features:    the sentence encoder's embedding of item_text (cached by content hash), optionally plus a
                    learned id embedding per catalog row (memorises popular items; zero-initialised).
Each tower is  normalize(P x + MLP(x))  with P = identity when the input already has the output width (so the
untrained model equals the plain encoder and training can only start from there) and the MLP's last layer
zero-initialised. Only these heads are trained: full fine-tuning of MiniLM over ~10k pairs per epoch would take
far longer than this machine allows and, with this little data, overfits. Loss: softmax cross-entropy of each
context against every catalog item (negatives="catalog"; "auto" up to CATALOG_NEGATIVES_MAX rows) or against the
items of its batch (in-batch negatives, duplicates of the positive item masked out).
Saved as model.safetensors + manifest.json (config, feature dims, catalog hash); never pickled.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.data.prompts import ensure_pad_token
from dlsearch.retrieval.ann import AnnIndex, build_ann
from dlsearch.retrieval.embedding import conversation_text, embed_texts
from dlsearch.retrieval.ranking import recall_at_k
from dlsearch.retrieval.shape import check_k

CONTEXT_TOWERS = ("encoder", "llm")
NEGATIVES = ("auto", "in_batch", "catalog")
CATALOG_NEGATIVES_MAX = 100_000  # auto: full-catalog softmax up to this many item rows, in-batch negatives above


@dataclass
class DualEncoderConfig:
    context_tower: str = "encoder"   # "encoder": sentence-encoder features; "llm": pooled LLM hidden states
    out_dim: int = 384               # shared space width; = encoder width keeps the identity start
    hidden: int = 512                # residual MLP width; bigger fits more, overfits sooner on ~10k pairs
    id_embedding: bool = False       # learned per-item vector added in the item tower (helps head items only)
    temperature: float = 0.05        # softmax temperature; lower = sharper, needs more negatives
    negatives: str = "auto"          # catalog: full softmax over every item row each step (exact, keeps the
                                     # popularity prior; the item tower runs on all rows); in_batch: the batch's
                                     # other items (popular items get pushed down, as they are sampled as negatives
                                     # more often: ReDial test recall@10 0.061 vs 0.178 with catalog); auto: catalog
                                     # up to CATALOG_NEGATIVES_MAX item rows, in_batch above
    epochs: int = 8                  # passes over the pairs; a few suffice on frozen features
    batch_size: int = 256            # = number of in-batch negatives + 1
    lr: float = 1e-3                 # AdamW learning rate for the heads
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.context_tower not in CONTEXT_TOWERS:
            raise ValueError(f"context_tower must be one of {CONTEXT_TOWERS}, got {self.context_tower!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.batch_size < 2 or self.epochs < 0 or self.temperature <= 0:
            raise ValueError("need batch_size >= 2, epochs >= 0, temperature > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "dual encoder config") -> "DualEncoderConfig":
        """Unknown keys (with the closest valid name) and wrong types are a ConfigError naming `where` and the key."""
        from dlsearch.data.config import from_dict

        return from_dict(cls, d, where)


class Tower(nn.Module):
    """x [b, in] (+ id vector) -> L2-normalised [b, out]."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, n_ids: int = 0):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        if in_dim == out_dim:
            nn.init.eye_(self.proj.weight)  # start as the frozen encoder itself
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.ids = nn.Embedding(n_ids, out_dim) if n_ids else None
        if self.ids is not None:
            nn.init.zeros_(self.ids.weight)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        y = self.proj(x) + self.mlp(x)  # [b, out]
        if self.ids is not None and ids is not None:
            has = (ids >= 0) & (ids < self.ids.num_embeddings)  # rows past the catalog (e.g. history items): no id
            y = y + self.ids(torch.where(has, ids, 0)) * has[:, None]
        return nn.functional.normalize(y, dim=-1)


class DualEncoder(nn.Module):
    def __init__(self, config: DualEncoderConfig, context_dim: int, item_dim: int, n_id_items: int = 0):
        super().__init__()
        self.config, self.context_dim, self.item_dim = config, context_dim, item_dim
        self.n_id_items = n_id_items if config.id_embedding else 0
        self.context = Tower(context_dim, config.out_dim, config.hidden)
        self.item = Tower(item_dim, config.out_dim, config.hidden, self.n_id_items)
        self.history: list[dict[str, float | None]] = []

    @torch.no_grad()
    def encode_contexts(self, feats: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """float32 [n, context_dim] -> [n, out_dim]."""
        self.eval()
        return _batched(lambda x, _: self.context(x), feats, None, batch_size)

    @torch.no_grad()
    def encode_items(self, feats: np.ndarray, rows: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        """float32 [n, item_dim] (+ int64 catalog rows for the id embedding) -> [n, out_dim]."""
        self.eval()
        return _batched(lambda x, r: self.item(x, r), feats, rows, batch_size)

    def save(self, out_dir: str | Path, **meta: Any) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / "model.safetensors"))
        manifest = {
            "kind": "dual_encoder", "config": asdict(self.config), "context_dim": self.context_dim,
            "item_dim": self.item_dim, "n_id_items": self.n_id_items, "history": self.history, **meta,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return out

    @classmethod
    def load(cls, model_dir: str | Path) -> "DualEncoder":
        d = Path(model_dir)
        if not (d / "manifest.json").exists():
            raise FileNotFoundError(f"{d}: no manifest.json; train with `dlsearch index build --kind dual`")
        m = json.loads((d / "manifest.json").read_text())
        if m.get("kind") != "dual_encoder":
            raise ValueError(f"{d / 'manifest.json'}: kind {m.get('kind')!r} is not 'dual_encoder'")
        model = cls(DualEncoderConfig.from_dict(m["config"]), m["context_dim"], m["item_dim"], m["n_id_items"])
        missing, unexpected = model.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
        if missing or unexpected:
            raise ValueError(f"{d / 'model.safetensors'}: missing keys {missing}, unexpected keys {unexpected}")
        model.history = m.get("history", [])
        model.manifest = m  # type: ignore[attr-defined]
        return model


def _batched(fn: Callable, feats: np.ndarray, rows: np.ndarray | None, batch_size: int) -> np.ndarray:
    if feats.dtype != np.float32 or feats.ndim != 2:
        raise ValueError(f"features must be float32 [n, d], got {feats.dtype} {feats.shape}")
    out = []
    for s in range(0, len(feats), batch_size):
        x = torch.from_numpy(feats[s : s + batch_size])
        r = torch.from_numpy(rows[s : s + batch_size]) if rows is not None else None
        out.append(fn(x, r).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def in_batch_loss(c: torch.Tensor, i: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of context b against the batch's items; other copies of b's item are not negatives."""
    logits = c @ i.T / temperature  # [b, b]
    same = targets[:, None] == targets[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(targets)))


def recall_at(model: DualEncoder, context_feats: np.ndarray, targets: np.ndarray, item_feats: np.ndarray, k: int = 10) -> float:
    """Mean recall@k (retrieval.ranking, the evaluation metric) of each context's target row among all item rows,
    ranked by exact inner product (validation during training)."""
    c = model.encode_contexts(context_feats)
    i = model.encode_items(item_feats, np.arange(len(item_feats), dtype=np.int64))
    top = np.argsort(-(c @ i.T), axis=1)[:, :k]  # [n, k] item rows, best first
    return float(np.mean([recall_at_k(row, (t,), k) for t, row in zip(targets.tolist(), top.tolist())]))


def resolve_negatives(negatives: str, n_items: int) -> str:
    """The negatives a run uses: `auto` is the full-catalog softmax (exact; keeps the popularity prior that in-batch
    sampling cancels) while one item-tower pass over every row per step stays cheap, in-batch negatives above."""
    if negatives != "auto":
        return negatives
    return "catalog" if n_items <= CATALOG_NEGATIVES_MAX else "in_batch"


def train_dual_encoder(
    context_feats: np.ndarray,
    targets: np.ndarray,
    item_feats: np.ndarray,
    config: DualEncoderConfig | None = None,
    *,
    n_id_items: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    validation_items: int | None = None,
    show_progress: bool = True,
) -> DualEncoder:
    """Train the towers on (context, item) pairs.

    Args:
        context_feats: float32 [n, dc] frozen context features (one row per pair).
        targets: int64 [n] row of each pair's item in item_feats.
        item_feats: float32 [m, di] frozen item features (any items: the indexed catalog first, others after).
        config: hyper-parameters.
        n_id_items: the first n_id_items rows of item_feats get id embeddings (config.id_embedding).
        validation: (context_feats, targets) scored by recall@10 after each epoch; the best epoch is kept.
        validation_items: rank validation targets among the first this-many item rows only (the catalog; extra
            rows such as history items are never recommended). Default: all rows.
    Returns:
        the trained DualEncoder (its `history` lists loss and validation recall per epoch).
    """
    config = config or DualEncoderConfig()
    if len(context_feats) != len(targets):
        raise ValueError(f"{len(context_feats)} contexts but {len(targets)} targets")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(item_feats)):
        raise ValueError("targets must index rows of item_feats")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = DualEncoder(config, context_feats.shape[1], item_feats.shape[1], n_id_items)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    cf, it = torch.from_numpy(context_feats), torch.from_numpy(item_feats)
    tg = torch.from_numpy(targets.astype(np.int64))
    all_rows = torch.arange(len(item_feats))
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    val_items = item_feats[: validation_items or len(item_feats)]
    if validation is not None:
        r0 = recall_at(model, validation[0], validation[1], val_items)
        model.history.append({"epoch": 0, "loss": None, "val_recall@10": r0})  # before training: no loss yet
        best = (r0, {k: v.clone() for k, v in model.state_dict().items()})
    negatives = resolve_negatives(config.negatives, len(item_feats))
    order = list(range(len(targets)))
    for epoch in range(1, config.epochs + 1):
        model.train()
        rng.shuffle(order)
        total, steps, t0 = 0.0, 0, time.perf_counter()
        batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
        for b in tqdm(batches, desc=f"dual epoch {epoch}", disable=not show_progress, leave=False):
            if len(b) < 2:
                continue
            idx = torch.tensor(b)
            t = tg[idx]
            if negatives == "catalog":
                logits = model.context(cf[idx]) @ model.item(it, all_rows).T / config.temperature  # [b, m]
                loss = nn.functional.cross_entropy(logits, t)
            else:
                loss = in_batch_loss(model.context(cf[idx]), model.item(it[t], t), t, config.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        rec: dict[str, float] = {"epoch": epoch, "loss": total / max(steps, 1), "seconds": round(time.perf_counter() - t0, 2)}
        if validation is not None:
            rec["val_recall@10"] = recall_at(model, validation[0], validation[1], val_items)
            if best is None or rec["val_recall@10"] > best[0]:
                best = (rec["val_recall@10"], {k: v.clone() for k, v in model.state_dict().items()})
        model.history.append(rec)
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return model


# ---- training pairs -------------------------------------------------------------------------------------------

def conversation_pairs(convs: Iterable[Conversation], catalog: Catalog) -> list[tuple[str, str]]:
    """(rendered context, target item id) for every target of every conversation (prepared per-turn format)."""
    out = []
    for c in convs:
        text = conversation_text(c, catalog)
        out.extend((text, t) for t in c.targets if t in catalog)
    return out


def history_text(titles: Sequence[str]) -> str:
    """A rating history rendered like a conversation turn, so one context tower reads both."""
    return "User: I liked " + "; ".join(titles)


def history_pairs(
    histories: dict[str, list[tuple[str, int]]],
    catalog: Catalog,
    *,
    window: int = 10,
    per_user: int = 10,
    holdout: int = 2,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """(last `window` titles before t, item at t) for up to `per_user` positions per user (seeded), never from the
    last `holdout` events of a history (kept for leave-one-out validation/test)."""
    rng = random.Random(seed)
    out = []
    for user in sorted(histories, key=lambda u: (len(u), u)):
        events = [i for i, _ in histories[user] if i in catalog]
        positions = list(range(1, max(len(events) - holdout, 1)))
        for t in sorted(rng.sample(positions, min(per_user, len(positions)))):
            out.append((history_text([catalog[i].title for i in events[max(0, t - window) : t]]), events[t]))
    return out


# ---- LLM context features ---------------------------------------------------------------------------------------

@torch.no_grad()
def llm_features(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 8, max_length: int = 512) -> np.ndarray:
    """Mean-pooled last hidden states of a causal LM over each text: float32 [n, hidden_size].

    `model` is any transformers model that returns hidden states (a fine-tuned model loaded by the caller)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    ensure_pad_token(tokenizer)
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[s : s + batch_size]), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)
        hs = model(**enc, output_hidden_states=True).hidden_states[-1]  # [b, t, h]
        mask = enc["attention_mask"].unsqueeze(-1).to(hs.dtype)  # [b, t, 1]
        out.append(((hs * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


# ---- index and search -------------------------------------------------------------------------------------------

def build_dual_index(
    model: DualEncoder, catalog: Catalog, item_feats: np.ndarray, *, factory: str = "auto", params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> AnnIndex:
    """Precompute item-tower vectors for every catalog row and index them (rows = catalog rows)."""
    if len(item_feats) != len(catalog):
        raise ValueError(f"{len(item_feats)} item feature rows for a catalog of {len(catalog)}")
    rows = np.arange(len(catalog), dtype=np.int64)
    vecs = model.encode_items(item_feats, rows if model.n_id_items else None)  # [n, out]
    return build_ann(vecs, factory, params=params, meta={"kind": "dual", "catalog_hash": catalog.content_hash(), "n_items": len(catalog), **(meta or {})})


class DualSearch:
    """Context texts -> features (sentence encoder by default) -> context tower -> ANN over item-tower vectors."""

    name = "dual"

    def __init__(
        self,
        model: DualEncoder,
        index: AnnIndex,
        *,
        features: Callable[[Sequence[str]], np.ndarray] | None = None,
        encoder: Any = None,
        cache_dir: str | None = None,
    ):
        if model.config.context_tower == "llm" and features is None:
            raise ValueError("an LLM context tower needs features=lambda texts: llm_features(model, tokenizer, texts)")
        self.model, self.index = model, index
        self.features = features or (lambda texts: embed_texts(texts, encoder=encoder, cache_dir=cache_dir))

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [n, k], rows int64 [n, k]) for rendered context texts."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not one string (wrap it in a list)")
        k = check_k(k)
        feats = self.features(list(queries))  # [n, context_dim]
        if feats.shape[1] != self.model.context_dim:
            raise ValueError(f"context features have width {feats.shape[1]}, the model expects {self.model.context_dim}")
        return self.index.search(self.model.encode_contexts(feats), k)
