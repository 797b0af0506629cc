"""dlsearch.app.trie_index.build_model_trie: the one build-and-save of a model's trie index (`index build --kind trie`
and the quickstart). The saved manifest records the catalog (relative path) and the prepared dir it came from."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from dlsearch.app.trie_index import build_model_trie
from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.ids import IdMap
from dlsearch.data.prepare import prepare, prepared_fingerprint
from dlsearch.decoding.generate import index_catalog
from dlsearch.finetune.manifest import write_manifest

from decoding_fixtures import make_model, make_tokenizer

TITLES = ["Toy Story", "Jumanji", "Heat", "The Matrix", "Balto", "Sabrina"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A catalog-only prepared dir (production `prepare`) and a tiny model dir whose manifest records it."""
    root = tmp_path_factory.mktemp("trie-index")
    (root / "src").mkdir()
    (root / "src" / "catalog.jsonl").write_text("".join(json.dumps({"id": f"m{i}", "title": t}) + "\n" for i, t in enumerate(TITLES)))
    data = root / "prep"
    prepare(str(root / "src"), "sequential", data, log=lambda s: None)
    catalog, idmap = load_catalog_jsonl(data / "catalog.jsonl"), IdMap.load(data / "idmap.json")
    tok = make_tokenizer()
    model = make_model(len(tok), seed=0, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    write_manifest(root / "model", catalog=catalog, idmap=idmap, tokenizer=tok, base_model="test:tiny",
                   extra={"prepared": prepared_fingerprint(data)})
    return root, data


def test_saved_index_records_its_catalog_and_prepared_dir(prepared):
    root, data = prepared
    index = build_model_trie(root / "model", root / "out" / "trie", catalog_path=data / "catalog.jsonl", data_dir=data)
    man = json.loads((root / "out" / "trie" / "manifest.json").read_text())
    # the quickstart's index recorded neither before: `generate --index` without --catalog then failed on it
    assert man["catalog_path"] == "../../prep/catalog.jsonl" and man["prepared"] == prepared_fingerprint(data)
    assert index_catalog(root / "out" / "trie").ids == load_catalog_jsonl(data / "catalog.jsonl").ids
    assert sorted(index.item_ids) == sorted(load_catalog_jsonl(data / "catalog.jsonl").ids)
    assert man["id_scheme"] == IdMap.load(data / "idmap.json").scheme == "sequential"  # prepare's id map, not atomic ids


def test_model_from_another_prepared_dir_is_refused(prepared, tmp_path):
    root, data = prepared
    other = tmp_path / "model"
    other.mkdir()
    for f in (root / "model").iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    tok = AutoTokenizer.from_pretrained(other)
    write_manifest(other, catalog=load_catalog_jsonl(data / "catalog.jsonl"), idmap=IdMap.load(data / "idmap.json"),
                   tokenizer=tok, base_model="test:tiny", extra={"prepared": "0" * 64})  # fine-tuned on another dir
    with pytest.raises(ValueError, match="built from another prepared dir"):
        build_model_trie(other, tmp_path / "trie", catalog_path=data / "catalog.jsonl", data_dir=data)
    assert not (tmp_path / "trie").exists()  # refused before anything is written
