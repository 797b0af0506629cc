"""The trie index of a catalog for a model, built and saved in one place (`dlsearch index build --kind trie` and the
quickstart); decoding.index.build_index does the building, this adds what a saved index records about its inputs.

    dlsearch index build --kind trie --data runs/redial --model runs/m --out runs/m/trie
"""

from __future__ import annotations

import os
from pathlib import Path

from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.ids import IdMap, build_idmap
from dlsearch.decoding.index import TrieIndex, build_index


def build_model_trie(model_dir: str | Path, out: str | Path, *, catalog_path: str | Path,
                     idmap_path: str | Path | None = None, data_dir: str | Path | None = None,
                     mode: str = "whole", source: str = "id") -> TrieIndex:
    """Build the trie index of a catalog for a model dir's tokenizer and save it to `out`.

    Args:
        model_dir: the model whose tokenizer will decode (fine-tuned, imported or a local HF dir).
        out: the index dir to write.
        catalog_path: the catalog JSONL; the manifest records it relative to `out` (the two can move together).
        idmap_path: the id map (the codes the model writes); default DATA_DIR/idmap.json, else atomic ids.
        data_dir: a `dlsearch data prepare` dir; when it has a manifest, its fingerprint is recorded and a model
            fine-tuned on another prepared dir is refused.
        mode, source: as in decoding.index.build_index.
    Returns:
        the saved index.
    Raises:
        ValueError: the model was built from another prepared dir, or the id map does not fit the catalog.
    """
    from dlsearch.finetune.loading import load_tokenizer

    catalog = load_catalog_jsonl(catalog_path)
    if idmap_path is None and data_dir is not None:
        idmap_path = Path(data_dir) / "idmap.json"
    idmap = IdMap.load(idmap_path) if idmap_path is not None else build_idmap(catalog, "atomic")
    prepared = None
    if data_dir is not None and (Path(data_dir) / "manifest.json").is_file():
        # a model fine-tuned on another prepared dir must not be indexed with this one's id map
        from dlsearch.data.prepare import check_same_prepared, prepared_fingerprint
        from dlsearch.finetune.manifest import read_manifest

        prepared = prepared_fingerprint(data_dir)
        check_same_prepared(read_manifest(model_dir).get("prepared"), data_dir, what=f"model {model_dir}")
    index = build_index(catalog, idmap, load_tokenizer(model_dir), mode=mode, source=source)
    # stored relative to the index dir: the index can be moved together with its data, and read from any directory
    index.manifest["catalog_path"] = os.path.relpath(Path(catalog_path).resolve(), Path(out).resolve())
    index.manifest["prepared"] = prepared
    index.save(out)
    return index
