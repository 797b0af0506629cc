"""Regression: generation paths tokenized prompts without special tokens while trl's SFTTrainer trains string prompts
with them, so a BOS-adding tokenizer saw a different context at inference (finetune.memorization, retrieval.generate)."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from trl.data_utils import _tokenize

from dlsearch.data.prompts import encode_prompts


def _bos_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "title": 4, ":": 5, "heat": 6, "toy": 7, "story": 8}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def test_prompts_are_encoded_as_trl_trains_them() -> None:
    tok = _bos_tokenizer()
    prompts = ["title : heat", "title : toy story"]
    enc = encode_prompts(tok, prompts)
    assert tok.padding_side == "right"  # restored
    for row, mask, prompt in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), prompts):
        real = [t for t, m in zip(row, mask) if m]
        assert real == _tokenize(tok, prompt)["input_ids"] and real[0] == tok.bos_token_id
    assert enc["attention_mask"][0, 0] == 0  # left padding: the shorter prompt is padded in front


def test_memorization_generation_feeds_the_bos(monkeypatch) -> None:
    from dlsearch.finetune.memorization import generate_ids

    tok = _bos_tokenizer()
    seen = {}

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, attention_mask, **kw):
            seen["ids"] = input_ids
            return torch.cat([input_ids, torch.full((input_ids.shape[0], 1), tok.eos_token_id)], dim=1)

    generate_ids(Model(), tok, ["heat"], max_new_tokens=2)
    first = seen["ids"][0][seen["ids"][0] != tok.pad_token_id][0]
    assert first == tok.bos_token_id
