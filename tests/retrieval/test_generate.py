"""TaskGenerator plumbing on a tiny random model (2 layers, 64 dims): prompts, left padding, parsing."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from dlsearch.data.formats import Conversation, Message
from dlsearch.retrieval.generate import TaskGenerator


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "</s>", "###", "task", "answer", "user", "horror", "comedy", ",", ":", "conversation"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, pad_token_id=0, eos_token_id=2))
    return model, tokenizer


def test_generates_one_answer_per_conversation(tiny, ml_catalog):
    model, tokenizer = tiny
    gen = TaskGenerator(model, tokenizer, ml_catalog, max_new_tokens=4, batch_size=2)
    convs = [Conversation(f"c{i}", [Message("user", "horror " * (i + 1))]) for i in range(3)]
    concepts = gen.concepts_many(convs)
    assert len(concepts) == 3 and all(isinstance(c, list) for c in concepts)
    assert all(isinstance(x, str) and x for c in concepts for x in c)
    assert isinstance(gen.query(convs[0]), str)
    assert tokenizer.padding_side == "right"  # restored after batched left-padded generation
