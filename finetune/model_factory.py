"""Models to fine-tune: a small Llama built from scratch with a catalog-trained tokenizer, or a local pretrained
causal LM with the catalog's id tokens added.

    dlsearch model init --catalog cat.jsonl --idmap idmap.json --size configs/models/llama-2m.yaml --out runs/init
    dlsearch model init --catalog cat.jsonl --idmap idmap.json --pretrained /models/my-lm --out runs/init

Both paths save a Hugging Face dir (AutoModelForCausalLM / AutoTokenizer load it) with a `manifest.json`. The
pretrained path (`init_pretrained_model`) lives in finetune/loading.py, beside the one loader it uses; it adds the
id tokens with `add_id_tokens` from here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap
from dlsearch.data.prompts import ANSWER_PREFIX, SPAN_MARKERS, TASKS, make_prompt, prompt_for_context, prompt_for_item_task
from dlsearch.finetune.config import ModelSize, TokenizerConfig
from dlsearch.finetune.manifest import write_manifest

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


# --- tokenizer -----------------------------------------------------------------------------------------------------

def tokenizer_corpus(catalog: Catalog, extra_texts: Iterable[str] = ()) -> Iterator[str]:
    """Text the BPE merges are learned from: titles, concepts, item text, the prompt instructions, extra text.

    Id codes are left out on purpose: merges learned from a few thousand random codes would tokenize each code
    differently; without them a code splits into short, reusable pieces."""
    for task in TASKS:
        yield make_prompt(task, "Title: Id: Conversation: History: User: Assistant:")
    for it in catalog:
        yield it.title
        if it.concepts:
            yield ", ".join(it.concepts)
        if it.text:
            yield it.text
    yield from extra_texts


def template_tokens() -> list[str]:
    """The constant parts of the shared prompt template (data/prompts.py) as whole tokens: each task's header up to
    its body ('### Task: Give the catalog id of this item.\nTitle:') and the answer prefix. A title->id example
    shrinks from ~32 to ~19 tokens, so a from-scratch model trains ~1.7x more examples per second; the prompt text
    itself is unchanged, so inference renders it the same way."""
    mark = "\x00"
    heads = []
    for task in TASKS:
        if task in ("title->id", "id->title", "item->concepts"):
            heads.append(prompt_for_item_task(task, title=mark, code=mark)["prompt"].split(mark)[0])
        else:
            heads.append(prompt_for_context(task, mark).split(mark)[0])
    return [h.rstrip(" ") for h in heads] + [ANSWER_PREFIX]


def id_tokens(idmap: IdMap) -> list[str]:
    """Tokens added whole to the vocabulary: the item-span markers, then the id scheme's special tokens."""
    return list(SPAN_MARKERS) + [t for t in idmap.special_tokens if t not in SPAN_MARKERS]


def train_tokenizer(catalog: Catalog, idmap: IdMap, cfg: TokenizerConfig, extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the catalog; id tokens and span markers added as whole (non-special) tokens so
    decoding with skip_special_tokens keeps them; pad/bos/eos are special."""
    tok = Tokenizer(models.BPE())
    pre = [pre_tokenizers.Digits(individual_digits=True)] if cfg.split_digits else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre + [pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(catalog, extra_texts), trainer=trainer)
    added = (template_tokens() if cfg.template_tokens else []) + id_tokens(idmap)
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False) for t in added])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)
    fast.padding_side = "right"  # training pads right; generation code switches to left explicitly
    return fast


# --- model from scratch --------------------------------------------------------------------------------------------

def build_model(size: ModelSize, tokenizer: Any, *, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialized Llama of the given size; vocabulary = the tokenizer's (ids included)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads, max_position_embeddings=size.max_position_embeddings,
        tie_word_embeddings=size.tie_word_embeddings, rope_theta=size.rope_theta,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def init_scratch_model(catalog: Catalog, idmap: IdMap, size: ModelSize, tok_cfg: TokenizerConfig, out_dir: str | Path,
                       *, seed: int = 0, size_name: str = "scratch", extra_texts: Iterable[str] = ()) -> Path:
    """Train the tokenizer, build the model, save both with a manifest. Returns out_dir."""
    out = Path(out_dir)
    tokenizer = train_tokenizer(catalog, idmap, tok_cfg, extra_texts)
    model = build_model(size, tokenizer, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, catalog=catalog, idmap=idmap, tokenizer=tokenizer, base_model=f"scratch:{size_name}",
                   extra={"kind": "model", "parameters": count_parameters(model), "size": size.__dict__})
    return out


# --- pretrained model ----------------------------------------------------------------------------------------------

def add_id_tokens(model: Any, tokenizer: Any, idmap: IdMap) -> list[int]:
    """Add the id tokens and span markers missing from a pretrained tokenizer, resize the embeddings, and set each
    new row to the mean embedding of the tokens its text had before (input and, if untied, output embeddings).

    Returns the ids of the added tokens (to keep them trainable under LoRA)."""
    wanted = [t for t in id_tokens(idmap) if t not in tokenizer.get_vocab()]
    if not wanted:
        return []
    # Pieces must come from the tokenizer before the tokens exist, else each token encodes to itself.
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in wanted]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in wanted])
    old_n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(wanted)
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        out_emb = model.get_output_embeddings()
        if out_emb is not None and out_emb.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(out_emb.weight)
        for w in matrices:
            for tid, ids in zip(new_ids, pieces):
                ids = [i for i in ids if i < old_n] or list(range(old_n))
                w[tid] = w[ids].float().mean(0).to(w.dtype)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return new_ids


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over config.json and the weight files' headers plus their first and last MiB: cheap on multi-GB
    checkpoints, and differs between different bases (architecture, vocabulary or weights)."""
    d = Path(model_dir)
    h = hashlib.sha256()
    cfg = json.loads((d / "config.json").read_text())
    for k in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        cfg.pop(k, None)
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for f in sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()
