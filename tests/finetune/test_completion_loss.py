"""train.loss completion: the model's own forward computes logits only where a row has a label (logits_to_keep), and
the loss and every trainable gradient equal the model's own full-logits loss, on a tied Llama whose output rows peft
wraps (trainable id tokens), with padding and masked prompts, on GPT-2 and on Gemma-2's capped logits; auto picks it
wherever trl's fused head cannot be used. Two-process DDP training through it: tests/finetune/test_train.py."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from dlsearch.finetune.train import completion_loss, loss_mode, output_layer_wrapped

VOCAB, NEW = 96, [90, 91, 92, 93]  # the last rows play the added id tokens


def tiny_llama(**extra) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, **extra)
    return LlamaForCausalLM(cfg)


def wrapped(model: LlamaForCausalLM):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], trainable_token_indices={"embed_tokens": NEW})
    return get_peft_model(model, lora)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, 7:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :6] = -100  # the prompt: no loss
    labels[0, 10:] = torch.tensor(NEW[:2])  # completions that name added tokens
    ids[0, 10:] = torch.tensor(NEW[:2])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("num_items", [None, 13])
def test_completion_loss_and_gradients_equal_the_full_logits_loss(num_items) -> None:
    model = wrapped(tiny_llama())
    assert output_layer_wrapped(model)  # the case trl's fused head cannot train
    inputs = batch()
    with torch.no_grad():  # wrapped rows unlike the base rows: their gradients come from the input and the output side
        for n, p in model.named_parameters():
            if p.requires_grad and "token_adapter" in n:
                p.add_(torch.randn_like(p) * 0.5)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    full = model(**inputs, **extra).loss
    g_full = grads(model, full)
    ours = completion_loss(model, inputs, None if num_items is None else torch.tensor(num_items))
    g_ours = grads(model, ours)
    assert torch.allclose(ours, full, atol=1e-5), (ours.item(), full.item())
    assert g_full.keys() == g_ours.keys() and any("token_adapter" in n for n in g_ours)
    for n in g_full:
        assert torch.allclose(g_ours[n], g_full[n], atol=1e-5), n


def test_auto_uses_completion_where_fused_cannot_run_and_plain_without_logits_to_keep() -> None:
    peft_wrapped = wrapped(tiny_llama())
    assert loss_mode("auto", peft_wrapped) == "completion" and loss_mode("fused", peft_wrapped) == "completion"
    assert loss_mode("plain", peft_wrapped) == "plain"
    if not torch.cuda.is_available():
        assert loss_mode("auto", tiny_llama()) == "completion"

    class NoKeep(LlamaForCausalLM):  # a causal LM whose forward has no logits_to_keep
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    old = NoKeep(tiny_llama().config)
    assert loss_mode("auto", old) == "plain"
    with pytest.raises(ValueError, match="logits_to_keep; use plain"):
        loss_mode("completion", old)


def test_capped_logits_are_capped_by_the_model_itself() -> None:
    """Gemma-2 caps its logits in its forward; asking the forward for the kept positions keeps the cap."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                           final_logit_softcapping=1.5, max_position_embeddings=64)).eval()
    with torch.no_grad():
        gemma.lm_head.weight.mul_(40.0)  # logits well past the cap of 1.5
    inputs = batch()
    full = gemma(**inputs).loss
    assert torch.allclose(completion_loss(gemma, inputs), full, atol=1e-5)
    gemma.config.final_logit_softcapping = None  # the cap matters on these logits: the loss differs without it
    assert not torch.allclose(gemma(**inputs).loss, full, atol=1e-3)


def test_other_architectures() -> None:
    """GPT-2 (its own head and backbone layout) gives its own loss too."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()  # eval: no dropout between the two passes
    inputs = batch()
    assert torch.allclose(completion_loss(gpt2, inputs), gpt2(**inputs).loss, atol=1e-5)
