"""The one model loader: a dir written by `dlsearch finetune` / `model init` (plain model or LoRA adapter on its
base), a base written by `dlsearch model import`, or any local Hugging Face causal-LM dir.

    model, tokenizer, manifest = load_model("runs/movielens", catalog=catalog)       # inference: eval, left padding
    model, tokenizer, manifest = load_finetuned("runs/movielens", catalog=catalog)   # the same, padding side as saved

Libraries (decoding, retrieval, evaluation) take a model and tokenizer; the application and the commands load them
here. Refuses, with a message that says what to do: a GGUF file (import it first), an adapter whose base model
differs from the one it was trained on (fingerprint of config + weights), a catalog other than the one in the
manifest, and adapter files whose keys do not match the model. A base with no catalog stamp is loaded with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap
from dlsearch.data.prompts import ensure_pad_token
from dlsearch.finetune.manifest import MANIFEST, ManifestError, check_catalog, read_manifest, write_manifest


def model_dtype(name: str) -> torch.dtype:
    """'auto': float32 on CPU (no fast half-precision matmuls), bfloat16 on CUDA where supported."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def nf4_config() -> Any:
    """QLoRA's 4-bit NormalFloat with double quantization; compute in bf16 on CUDA, float32 on CPU."""
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=True)


def model_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a model dir; for a Hugging Face dir without one (a base not written by dlsearch), a stand-in
    {"kind": "base", "base_model": path}.

    Raises:
        ValueError: a GGUF file (or a dir of GGUF files without config.json): import it with `dlsearch model import`.
        FileNotFoundError: nothing at path.
        ManifestError: a dir that is neither.
    """
    p = Path(path)
    gguf = p if p.suffix.lower() == ".gguf" else next(iter(sorted(p.glob("*.gguf"))), None) if p.is_dir() else None
    if gguf is not None and not (p.is_dir() and ((p / MANIFEST).exists() or (p / "config.json").exists())):
        raise ValueError(f"{p}: a GGUF file; convert it once with `dlsearch model import {p} --out DIR`, then pass DIR")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such model dir")
    if (p / MANIFEST).exists():
        return read_manifest(p)
    if (p / "config.json").exists():
        return {"kind": "base", "base_model": str(p)}
    raise ManifestError(f"{p}: not a model dir (neither manifest.json from dlsearch nor a Hugging Face config.json)")


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a model dir (checked as in model_manifest), with a pad token (the EOS when it has none)."""
    model_manifest(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tokenizer)
    return tokenizer


def init_pretrained_model(catalog: Catalog, idmap: IdMap, pretrained_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a local causal LM with the id tokens added (mean-initialized) into out_dir, with a manifest."""
    from dlsearch.finetune.model_factory import add_id_tokens, count_parameters

    src = Path(pretrained_dir)
    # Any base: `dlsearch model import` output or a local Hugging Face dir (a GGUF file is refused with the command
    # that imports it); a fine-tuned dir (with its id tokens) can be a base too.
    model, tokenizer, _ = load_finetuned(src, merge=True)
    added = add_id_tokens(model, tokenizer, idmap)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, catalog=catalog, idmap=idmap, tokenizer=tokenizer, base_model=str(src.resolve()),
                   extra={"kind": "model", "added_token_ids": added, "parameters": count_parameters(model)})
    return out


def safetensors_problem(path: str | Path, *, read_tensors: bool = False) -> str | None:
    """Why a .safetensors file cannot be loaded ("<file>: <error>"), or None. The header check (safe_open) catches a
    truncated file: its tensor offsets no longer fit the file size. `read_tensors` also reads every tensor back (a
    checkpoint about to be resumed); a model about to be loaded needs only the header (its tensors are read next)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as st:
            for key in st.keys() if read_tensors else ():
                st.get_tensor(key)
    except Exception as e:  # SafetensorError and friends: the message names no file, ours does
        return f"{path}: {type(e).__name__}: {e}"
    return None


def check_weight_files(model_dir: str | Path) -> None:
    """Refuse a model dir whose .safetensors weights are damaged, naming the file (instead of a SafetensorError
    traceback from inside from_pretrained that names none).

    Raises:
        ValueError: a weights file that does not read back (truncated copy, full disk, interrupted download).
    """
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem is not None:
            raise ValueError(f"{f}: damaged or truncated weights file, the model cannot be loaded; copy or save it "
                             f"again ({problem.removeprefix(f'{f}: ')})")


def load_base(path: str | Path, *, quantized: bool, dtype: torch.dtype = torch.float32) -> Any:
    """The causal LM in `path` (weights checked first: check_weight_files), in `dtype` or, quantized, as NF4."""
    check_weight_files(path)
    if not quantized:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    q = nf4_config()
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=q.bnb_4bit_compute_dtype,
                                                device_map={"": 0} if torch.cuda.is_available() else {"": "cpu"})


def load_finetuned(model_dir: str | Path, *, base_model_dir: str | Path | None = None, catalog: Catalog | None = None,
                   merge: bool = False, dtype: torch.dtype = torch.float32, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer with a pad token, manifest) for a model dir, an adapter dir or a base dir.

    Args:
        model_dir: dir with manifest.json and either model weights or an adapter/ subdir; or a base (model import,
            or any local Hugging Face causal-LM dir).
        base_model_dir: for adapters, the base to load onto (default: the manifest's base_model path).
        catalog: when given, must be the catalog the model was trained for (a base has none: warned, not refused).
        merge: merge LoRA weights into the base and return a plain model.
        device: where the model runs; default the GPU where torch sees one (every inference path moves its inputs to
            the model's device: evaluate, recommend, serve, generate, sweep, measured memorization), else the CPU.
    Raises:
        ManifestError: wrong catalog, wrong base model, or adapter keys that do not match.
        ValueError: a GGUF file (see model_manifest).
    """
    d = Path(model_dir)
    man = model_manifest(d)
    if catalog is not None:
        if man.get("kind") == "base":
            warnings.warn(f"{d}: a base model with no catalog stamp (not fine-tuned for this catalog); using it as is",
                          stacklevel=2)
        else:
            check_catalog(man, catalog, where=str(d))
    tokenizer = load_tokenizer(d)
    if man.get("kind", "model") in ("model", "base"):
        model = load_base(d, quantized=False, dtype=dtype)
    else:
        model = _load_adapter(d, man, tokenizer, base_model_dir, dtype=dtype, merge=merge)
    if device is None and torch.cuda.is_available():
        device = "cuda"
    if device is not None and next(model.parameters()).device.type != torch.device(device).type:
        model.to(device)  # a 4-bit base is placed on the GPU when loaded (device_map) and never moved
    model.eval()
    return model, tokenizer, man


def load_model(model_dir: str | Path, *, adapter: str | Path | None = None, catalog: Catalog | None = None,
               dtype: torch.dtype = torch.float32, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """load_finetuned for inference: with `adapter`, that adapter dir on model_dir as its base; the tokenizer pads on
    the left (decoder-only batches). Every verb that takes --model / model_dir loads through here."""
    if adapter is not None:
        model, tokenizer, man = load_finetuned(adapter, base_model_dir=model_dir, catalog=catalog, dtype=dtype, device=device)
    else:
        model, tokenizer, man = load_finetuned(model_dir, catalog=catalog, dtype=dtype, device=device)
    tokenizer.padding_side = "left"
    return model, tokenizer, man


def _load_adapter(d: Path, man: dict[str, Any], tokenizer: Any, base_model_dir: str | Path | None, *, dtype: torch.dtype,
                  merge: bool) -> Any:
    from peft import PeftModel

    from dlsearch.finetune.model_factory import add_id_tokens, model_fingerprint

    base = Path(base_model_dir or man["base_model"])
    if not (base / "config.json").exists():
        raise ManifestError(f"{d}: adapter's base model {base} is not a model dir; pass base_model_dir=<the base it was trained on>")
    want = man.get("base_model_fingerprint")
    got = model_fingerprint(base)
    if want is not None and got != want:
        raise ManifestError(
            f"{d}: this adapter was trained on base model {man['base_model']} (fingerprint {want[:12]}), "
            f"but {base} has fingerprint {got[:12]}: a different model or different weights. Load it on the base it "
            "was trained on, or fine-tune a new adapter for this base."
        )
    # A QLoRA adapter is reloaded on the same 4-bit base it trained on (identical logits), unless merging, which
    # needs full-precision weights.
    model = load_base(base, quantized=man.get("method") == "qlora" and not merge, dtype=dtype)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        # A pretrained base: the id tokens were added at training time; re-add them the same way.
        add_id_tokens(model, load_tokenizer(base), IdMap.load(d / "idmap.json"))
    check_weight_files(d / "adapter")
    peft_model = PeftModel.from_pretrained(model, d / "adapter", is_trainable=False)
    # adapter_config.json names the base as the training run's cwd saw it (often relative: runs/x/init); peft reads
    # that path again to decide which keys an adapter holds, so from another cwd it warned "Could not find a config
    # file" and guessed. It is the base loaded here.
    peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path = str(base)
    saved = check_adapter_keys(peft_model, d / "adapter")
    if not merge:
        # peft upcasts adapters to float32 on load; a QLoRA adapter trained in bf16 (trl's default on GPU) must run in
        # bf16 again to give the logits it gave in training.
        for name, p in peft_model.named_parameters():
            t = saved.get(name.replace(".default", ""))  # saved keys drop the adapter name
            if t is not None and t.dtype != p.dtype:
                p.data = p.data.to(t.dtype)
    return peft_model.merge_and_unload() if merge else peft_model


def check_adapter_keys(peft_model: Any, adapter_dir: Path) -> dict[str, Any]:
    """Every adapter tensor in the file must be one the model expects and vice versa (peft only warns).
    Returns the saved tensors."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    saved = set(tensors)
    expected = set(get_peft_model_state_dict(peft_model).keys())
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        raise ManifestError(
            f"{adapter_dir}: adapter does not fit the model: missing keys {missing[:5]} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]} ({len(unexpected)}); was it saved from another architecture or peft config?"
        )
    return tensors
