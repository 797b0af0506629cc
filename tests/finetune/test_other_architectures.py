"""A base that is not a Llama: GPT-2's layers are c_attn / c_proj / c_fc (Conv1D), and it has no chat template. The
generic recipes name `all-linear`, so finetune -> trie -> generate run on it unchanged; a recipe that lists another
architecture's layer names is refused with the key, this model's linear layers and the value that fits any."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dlsearch.cli import main
from dlsearch.data.formats import Conversation, Message, load_predictions, save_conversations

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decoding_fixtures import make_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "finetune-pretrained-lora.yaml"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2")
    tok = make_tokenizer()
    assert tok.chat_template is None
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def recipe_sets(out: Path, base: Path, *extra: str) -> list[str]:
    sets = [f"output_dir={out}", f"model.pretrained={base}", "data.max_items=12", "data.id_scheme=title",
            "stages.lora.tasks={title->id: 1.0}", "stages.lora.train.max_steps=2", "stages.lora.train.batch_size=4",
            "stages.lora.train.grad_accum=1", "stages.lora.train.max_length=192", "stages.lora.lora.r=4",
            "stages.lora.merge=false", "eval.memorization=false", "eval.curve_every=0", *extra]
    return [a for s in sets for a in ("--set", s)]


def test_finetune_trie_generate_on_gpt2(gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["finetune", "--config", str(RECIPE), *recipe_sets(out, gpt2_dir)]) == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    layers = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert layers == {"c_attn", "c_proj", "c_fc"}  # every linear layer (peft lists them by path), not the LM head
    assert main(["index", "build", "--kind", "trie", "--catalog", str(out / "catalog.jsonl"), "--idmap",
                 str(out / "idmap.json"), "--model", str(out), "--out", str(tmp_path / "trie")]) == 0
    ids = [json.loads(line)["id"] for line in (out / "catalog.jsonl").read_text().splitlines()]
    save_conversations(tmp_path / "c.jsonl", [Conversation(f"c{i}", [Message("user", f"I liked @{ids[i]}, and now?")])
                                              for i in range(3)])
    assert main(["generate", "--model", str(out), "--index", str(tmp_path / "trie"), "--input", str(tmp_path / "c.jsonl"),
                 "--beams", "4", "--k", "3", "--out", str(tmp_path / "p.jsonl")]) == 0
    preds = load_predictions(tmp_path / "p.jsonl")
    assert [len(p.items) for p in preds] == [3, 3, 3]
    assert all(s.item_id in ids and s.item_id != ids[i] for i, p in enumerate(preds) for s in p.items)


def test_another_architectures_layer_names_are_refused_by_key(gpt2_dir: Path, tmp_path: Path, capsys) -> None:
    sets = recipe_sets(tmp_path / "m", gpt2_dir, "stages.lora.lora.target_modules=[q_proj, v_proj]")
    assert main(["finetune", "--config", str(RECIPE), *sets]) == 2
    err = capsys.readouterr().err
    assert "stages.lora.lora.target_modules: ['q_proj', 'v_proj'] are not layers of this GPT2LMHeadModel" in err
    assert "'c_attn'" in err and "all-linear" in err
    assert main(["finetune", "--config", str(RECIPE), *recipe_sets(tmp_path / "m", gpt2_dir, "stages.lora.lora.target_modules=every")]) == 2
    assert "a list of module names or 'all-linear', got 'every'" in capsys.readouterr().err
    # a path suffix names a layer as it does for peft
    assert main(["finetune", "--config", str(RECIPE), *recipe_sets(tmp_path / "m2", gpt2_dir, "stages.lora.lora.target_modules=[attn.c_attn]")]) == 0
    # peft also puts LoRA on embeddings (GPT-2's wte), but not beside trainable id-token rows: that pair is refused
    # by key (peft's own error is a TypeError about trainable_token_indices); without the rows it trains
    wte = recipe_sets(tmp_path / "m3", gpt2_dir, "stages.lora.lora.target_modules=[c_attn, wte]")
    assert main(["finetune", "--config", str(RECIPE), *wte]) == 2
    assert "['wte'] is the input embedding" in capsys.readouterr().err
    assert main(["finetune", "--config", str(RECIPE), *wte, "--set", "stages.lora.lora.train_new_tokens=false"]) == 0
    adapter = json.loads((tmp_path / "m3" / "adapter" / "adapter_config.json").read_text())
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == {"c_attn", "wte"}
