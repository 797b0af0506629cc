"""The merged model `dlsearch finetune` writes (<out>/merged, train.export_merged) gives the logits of the LoRA
adapter it was merged from, both loaded from disk by the production loader (finetune.loading.load_finetuned)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel

from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.prompts import apply_chat_template, encode_prompts, prompt_for_item_task
from dlsearch.finetune.loading import load_finetuned


def test_merged_export_gives_the_adapters_logits(tiny_run: tuple[Path, list[dict]]) -> None:
    out = tiny_run[0]  # final stage: LoRA (adapter/) on stages/index, merge: true -> merged/
    adapter, tok, man = load_finetuned(out)
    merged, merged_tok, merged_man = load_finetuned(out / "merged")
    base, _, _ = load_finetuned(man["base_model"])
    assert isinstance(adapter, PeftModel) and not isinstance(merged, PeftModel)
    assert man["kind"] == "adapter" and merged_man["kind"] == "model" and merged_man["merged_from"] == str(out.resolve())
    assert merged_tok.get_vocab() == tok.get_vocab()

    catalog = load_catalog_jsonl(out / "catalog.jsonl")
    prompts = [apply_chat_template(tok, prompt_for_item_task("title->id", title=it.title)["prompt"]) for it in catalog.items[:4]]
    batch = encode_prompts(tok, prompts)  # padded batch: the attention mask is exercised too
    with torch.no_grad():
        want = adapter(**batch).logits  # [4, seq, vocab]
        got = merged(**batch).logits
        before = base(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (want - before)[mask].abs().max() > 1e-3  # the adapter changes the logits: the comparison can fail
    assert (want - got)[mask].abs().max() <= 1e-5
