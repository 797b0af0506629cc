"""`manifest.json` of a model output dir: what catalog, id scheme, base model and tokenizer it belongs to.

Fields (read by decoding, retrieval and the app to refuse a mismatched catalog or tokenizer): catalog_hash,
catalog_version, id_scheme, base_model, tokenizer_fingerprint (data.fingerprint), plus kind ("model" | "adapter"), created_at and run details.
The dir also holds `idmap.json` and `catalog.jsonl`, so decoding and evaluation need nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from dlsearch.data.catalog import Catalog
from dlsearch.data.files import atomic_write_json
from dlsearch.data.ids import IdMap

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A model dir used with a catalog, id map or base model it was not trained for."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    from dlsearch.data.fingerprint import tokenizer_fingerprint as fp

    return fp(tokenizer)


def write_manifest(out_dir: str | Path, *, catalog: Catalog, idmap: IdMap, tokenizer: Any, base_model: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    man: dict[str, Any] = {
        "catalog_hash": catalog.content_hash(),
        "catalog_version": idmap.version,
        "id_scheme": idmap.scheme,
        "base_model": base_model,
        "n_items": len(catalog),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    man["tokenizer_fingerprint"] = tokenizer_fingerprint(tokenizer)
    man.update(extra or {})
    idmap.save(out / "idmap.json")
    catalog.save_jsonl(out / "catalog.jsonl")
    atomic_write_json(out / MANIFEST, man, default=str)
    return man


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    p = Path(model_dir) / MANIFEST
    if not p.exists():
        raise ManifestError(f"{model_dir}: no {MANIFEST}; not a model dir written by dlsearch finetune / model init")
    return json.loads(p.read_text(encoding="utf-8"))


def check_catalog(manifest: dict[str, Any], catalog: Catalog, *, where: str) -> None:
    h = catalog.content_hash()
    if manifest.get("catalog_hash") != h:
        raise ManifestError(
            f"{where} was trained for catalog {str(manifest.get('catalog_hash'))[:12]} "
            f"({manifest.get('n_items')} items), not this catalog {h[:12]} ({len(catalog)} items); "
            "fine-tune on this catalog or pass the catalog it was trained on"
        )
