"""`dlsearch quickstart --base DIR` on the real pretrained base (SmolLM2-135M, imported once per session by the
smollm2_dir fixture): title ids, one LoRA stage on the base, trie over the titles, direct search evaluated beside
popularity, and the base named in the output. Tiny settings: 40 dialogues, 2 LoRA steps, 5 evaluated turns."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dlsearch.cli import main

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ["DLSEARCH_CACHE_DIR"]) if os.environ.get("DLSEARCH_CACHE_DIR") else REPO / ".cache"


def test_quickstart_fine_tunes_the_pretrained_base_it_is_given(smollm2_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "qs"
    out.mkdir()
    (CACHE / "embeddings").mkdir(parents=True, exist_ok=True)
    (out / "embeddings").symlink_to(CACHE / "embeddings")  # shared with the other tests: no re-embedding
    overrides = ["stages.conversation.train.max_steps=2", "stages.conversation.train.batch_size=2", "stages.conversation.lora.r=4"]
    args = ["quickstart", "--out", str(out), "--base", str(smollm2_dir), "--eval-turns", "5", "--set", "dialogues=40",
            "--set", "dual_epochs=1", "--set", "show=1", "--set", "n_resamples=20", "--set", f"recipe_overrides={json.dumps(overrides)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "quickstart.json").read_text())
    assert result["base"]["kind"] == "pretrained" and result["base"]["path"] == str(smollm2_dir)
    assert f"base: pretrained: {smollm2_dir}" in printed and "(base: pretrained)" in printed
    assert result["id_scheme"] == "title" and result["finetune"]["stages"] == ["conversation"]
    assert result["finetune"]["recipe"].endswith("quickstart-recipe-pretrained.yaml")
    man = json.loads((out / "model" / "manifest.json").read_text())
    assert man["kind"] == "adapter" and man["id_scheme"] == "title" and man["stage"]["steps"] == 2
    systems = json.loads((out / "eval" / "results.json").read_text())["modes"]["excluded"]["systems"]
    assert {"popularity", "direct", "router"} <= set(systems) and systems["direct"]["valid_item_rate"] == 1.0
    assert result["verdict"]["text"].startswith("direct search recall@10")
    # direct search's rankings are kept as they are made: a rerun after a kill in step 6 searches only the rest
    (store,) = (out / "rankings").glob("direct_from_config-*.jsonl")
    assert len(store.read_text().splitlines()) >= 5
    # the same --out with the other base would reuse this run's title-id data and SmolLM2 adapter: refused
    assert main(["quickstart", "--out", str(out), "--base", "scratch"]) == 2
