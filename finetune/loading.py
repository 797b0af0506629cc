"""Load what `dlsearch finetune` / `dlsearch model init` saved: a plain model dir or a LoRA adapter on its base.

    model, tokenizer, manifest = load_finetuned("runs/movielens", catalog=catalog)

Refuses, with a message that says what to do, an adapter whose base model differs from the one it was trained on
(fingerprint of config + weights), a catalog other than the one in the manifest, and adapter files whose keys do
not match the model (missing or unexpected keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlsearch.data.catalog import Catalog
from dlsearch.data.ids import IdMap
from dlsearch.finetune.manifest import ManifestError, check_catalog, read_manifest


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


def load_base(path: str | Path, *, quantized: bool, dtype: torch.dtype = torch.float32) -> Any:
    if not quantized:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    q = nf4_config()
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=q.bnb_4bit_compute_dtype,
                                                device_map={"": 0} if torch.cuda.is_available() else {"": "cpu"})


def load_finetuned(model_dir: str | Path, *, base_model_dir: str | Path | None = None, catalog: Catalog | None = None,
                   merge: bool = False, dtype: torch.dtype = torch.float32, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, manifest) for a model dir or an adapter dir.

    Args:
        model_dir: dir with manifest.json and either model weights or an adapter/ subdir.
        base_model_dir: for adapters, the base to load onto (default: the manifest's base_model path).
        catalog: when given, must be the catalog the model was trained for.
        merge: merge LoRA weights into the base and return a plain model.
    Raises:
        ManifestError: wrong catalog, wrong base model, or adapter keys that do not match.
    """
    d = Path(model_dir)
    man = read_manifest(d)
    if catalog is not None:
        check_catalog(man, catalog, where=str(d))
    tokenizer = AutoTokenizer.from_pretrained(d)
    if man.get("kind", "model") == "model":
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
    else:
        model = _load_adapter(d, man, tokenizer, base_model_dir, dtype=dtype, merge=merge)
    if device is not None:
        model.to(device)
    model.eval()
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
        add_id_tokens(model, AutoTokenizer.from_pretrained(base), IdMap.load(d / "idmap.json"))
    peft_model = PeftModel.from_pretrained(model, d / "adapter", is_trainable=False)
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
