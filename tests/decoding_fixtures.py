"""Tiny fixtures for decoding tests: a BPE tokenizer trained on a few strings and random 2-layer, 64-dim Llamas."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=512)
SPECIALS = ["<pad>", "<s>", "</s>", "<item>", "</item>"]
CORPUS = [
    "### Task: Give the catalog id of this item.", "Title: Toy Story (1995)", "\n### Answer: ABC", "Heat (1995)",
    "Jumanji", "The Matrix", "I suggest <item>Heat</item> and more", "User: hello", "Assistant: try this",
    "ABCDEFGHJKLMNPQRSTUVWXYZ 0123456789", "Grumpier Old Men", "Waiting to Exhale", "Father of the Bride",
]


def make_tokenizer(corpus: list[str] = CORPUS, vocab_size: int = 300, seed_text: str = "", kind: str = "bytelevel"):
    """A BPE tokenizer wrapped as a transformers fast tokenizer: kind "bytelevel" (GPT-2 style leading-space
    tokens) or "metaspace" (SentencePiece style: spaces become '▁', a '▁' is prepended to the first word)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None))
    if kind == "metaspace":
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + ["<unk>"])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(list(corpus) + ([seed_text] if seed_text else []), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  additional_special_tokens=["<item>", "</item>"])
    tok.padding_side = "left"
    return tok


def make_model(vocab_size: int, seed: int = 0, *, eos: int = 2, pad: int = 0, bos: int = 1):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, eos_token_id=eos, pad_token_id=pad, bos_token_id=bos, **TINY)
    model = LlamaForCausalLM(cfg).eval()
    return model


def random_prompts(rng: np.random.Generator, batch: int, vocab: int, *, pad: int = 0, low: int = 5, max_len: int = 6):
    """Left-padded random prompts (tokens >= low) and their attention mask."""
    lens = rng.integers(1, max_len + 1, size=batch)
    width = int(lens.max())
    ids = np.full((batch, width), pad, dtype=np.int64)
    mask = np.zeros((batch, width), dtype=np.int64)
    for i, n in enumerate(lens):
        ids[i, width - n:] = rng.integers(low, vocab, size=n)
        mask[i, width - n:] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


class BothBackends(LogitsProcessor):
    """Runs the numpy and the torch constraint on copies of each step's scores, checks they agree (same allowed
    tokens, same scores), and passes the numpy result on."""

    def __init__(self, index, **kw):
        from dlsearch.decoding.constraint import TrieConstraint

        self.np_ = TrieConstraint(index, backend="numpy", **kw)
        self.t = TrieConstraint(index, backend="torch", **kw)
        self.steps = 0

    def __call__(self, input_ids, scores):
        a = self.np_(input_ids, scores.clone())
        b = self.t(input_ids, scores.clone())
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        assert torch.equal(fa, fb), f"step {self.steps}: allowed sets differ in rows {(fa != fb).any(1).nonzero().flatten().tolist()}"
        assert torch.equal(a[fa], b[fb]) and torch.equal(a.isneginf(), b.isneginf())
        self.steps += 1
        return a


def write_tiny_direct(out_dir, catalog, *, seed: int = 3, beams: int = 8, batch_size: int = 16) -> dict:
    """A tiny random model (tokenizer trained on the catalog titles) saved as a model dir, its trie index and the
    catalog, all written through the production savers; returns a serve/recommend config (direct search only)
    built from configs/serve.yaml. For `dlsearch serve` tests and bench/bench_serve.py."""
    from pathlib import Path

    import yaml

    from dlsearch.data.ids import build_idmap
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.manifest import write_manifest

    d = Path(out_dir)
    tok = make_tokenizer(CORPUS + [it.title for it in catalog][:2000], vocab_size=600)
    model = make_model(len(tok), seed=seed, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    idmap = build_idmap(catalog, "random", seed=0)
    write_manifest(d / "model", catalog=catalog, idmap=idmap, tokenizer=tok, base_model="test:tiny")
    build_index(catalog, idmap, tok, mode="whole").save(d / "trie")
    catalog.save_jsonl(d / "catalog.jsonl")
    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "configs" / "serve.yaml").read_text())
    cfg.update(catalog=str(d / "catalog.jsonl"), model_dir=str(d / "model"), cache_dir=str(d / "cache"))
    cfg["strategies"] = {"direct": {"enabled": True, "factory": "dlsearch.retrieval.direct:direct_from_config",
                                    "options": {"index": str(d / "trie"), "beams": beams, "batch_size": batch_size}}}
    return cfg
