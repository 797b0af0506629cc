"""The one loader (finetune.loading.load_model): every verb that takes a model accepts a local Hugging Face dir with
no manifest (a base: warned, not refused), refuses a GGUF file with the command that imports it, and keeps refusing
a model stamped for another catalog."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from dlsearch.cli import main
from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Conversation, Message, load_predictions, save_conversations
from dlsearch.data.ids import build_idmap
from dlsearch.finetune.loading import init_pretrained_model, load_model
from dlsearch.finetune.manifest import ManifestError

from decoding_fixtures import make_model, make_tokenizer

TITLES = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Sabrina (1995)", "Balto (1995)"]
CATALOG = Catalog([Item(str(100 + i), t) for i, t in enumerate(TITLES)])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Hugging Face causal-LM dir: weights, config, tokenizer, no manifest (what any local base looks like)."""
    d = tmp_path_factory.mktemp("hf")
    tok = make_tokenizer()
    tok.pad_token = None  # many bases ship without one; the loader gives them EOS
    make_model(len(tok), seed=4).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_plain_hf_dir_loads_with_a_warning_and_a_pad_token(hf_dir: Path) -> None:
    with pytest.warns(UserWarning, match="no catalog stamp"):
        model, tok, man = load_model(hf_dir, catalog=CATALOG)
    assert man["kind"] == "base" and not model.training
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no catalog asked for: nothing to warn about
        load_model(hf_dir)


def test_index_build_and_generate_accept_a_plain_hf_dir(hf_dir: Path, tmp_path: Path) -> None:
    CATALOG.save_jsonl(tmp_path / "catalog.jsonl")
    build_idmap(CATALOG, "random", seed=0).save(tmp_path / "idmap.json")
    assert main(["index", "build", "--kind", "trie", "--catalog", str(tmp_path / "catalog.jsonl"), "--idmap",
                 str(tmp_path / "idmap.json"), "--model", str(hf_dir), "--out", str(tmp_path / "trie")]) == 0
    convs = [Conversation(f"c{i}", [Message("user", f"I liked @{100 + i}, what next?")]) for i in range(3)]
    save_conversations(tmp_path / "convs.jsonl", convs)
    with pytest.warns(UserWarning, match="no catalog stamp"):
        assert main(["generate", "--model", str(hf_dir), "--index", str(tmp_path / "trie"), "--input",
                     str(tmp_path / "convs.jsonl"), "--beams", "4", "--k", "3", "--out", str(tmp_path / "p.jsonl")]) == 0
    preds = load_predictions(tmp_path / "p.jsonl")
    assert [len(p.items) for p in preds] == [3, 3, 3] and all(s.item_id in CATALOG for p in preds for s in p.items)


def test_a_gguf_file_is_refused_with_the_import_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.Q4_1.gguf").write_bytes(b"GGUF")
    CATALOG.save_jsonl(tmp_path / "catalog.jsonl")
    assert main(["index", "build", "--kind", "trie", "--catalog", str(tmp_path / "catalog.jsonl"),
                 "--model", str(tmp_path / "m.Q4_1.gguf"), "--out", str(tmp_path / "trie")]) == 2
    assert "dlsearch model import" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dlsearch model import"):
        load_model(tmp_path)  # a dir holding only GGUF files


def test_finetune_base_from_a_plain_hf_dir_and_another_catalog_refused(hf_dir: Path, tmp_path: Path) -> None:
    idmap = build_idmap(CATALOG, "random", seed=0)
    out = init_pretrained_model(CATALOG, idmap, hf_dir, tmp_path / "init")  # model.pretrained: <plain HF dir>
    man = json.loads((out / "manifest.json").read_text())
    assert man["catalog_hash"] == CATALOG.content_hash() and man["base_model"] == str(hf_dir.resolve())
    model, tok, _ = load_model(out, catalog=CATALOG)
    ref, _, _ = load_model(hf_dir)
    ids = torch.tensor([[5, 9, 17]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits[..., : ref.config.vocab_size], ref(ids).logits, atol=1e-6)
    other = Catalog([Item("1", "Something Else (2001)")])
    with pytest.raises(ManifestError, match="trained for catalog"):
        load_model(out, catalog=other)


@pytest.mark.parametrize("cut", [100, 484_000])  # bytes cut off the end: the tensor data, or the header too
def test_a_truncated_model_safetensors_is_named_not_a_traceback(hf_dir: Path, tmp_path: Path, cut: int,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """issue 13: a truncated model .safetensors (a copy cut short, a full disk) gave a SafetensorError traceback
    naming no file. The loader names the file and says it is damaged; the CLI prints `error: ...` and exits 2."""
    import re
    import shutil

    d = tmp_path / "model"
    shutil.copytree(hf_dir, d)
    weights = d / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(max(8, weights.stat().st_size - cut))
    with pytest.raises(ValueError, match=rf"{re.escape(str(weights))}: damaged or truncated"):
        load_model(d)
    CATALOG.save_jsonl(tmp_path / "catalog.jsonl")
    build_idmap(CATALOG, "random", seed=0).save(tmp_path / "idmap.json")
    assert main(["index", "build", "--kind", "trie", "--catalog", str(tmp_path / "catalog.jsonl"), "--idmap",
                 str(tmp_path / "idmap.json"), "--model", str(hf_dir), "--out", str(tmp_path / "trie")]) == 0
    save_conversations(tmp_path / "convs.jsonl", [Conversation("c0", [Message("user", "I liked @100, what next?")])])
    capsys.readouterr()
    with pytest.warns(UserWarning, match="no catalog stamp"):  # a plain HF dir: warned, then its weights refused
        assert main(["generate", "--model", str(d), "--index", str(tmp_path / "trie"), "--input",
                     str(tmp_path / "convs.jsonl"), "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(weights) in err and "damaged or truncated" in err


def test_inference_loads_on_the_gpu_when_there_is_one(hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every inference verb loads through load_finetuned (load_model for --model, the measured memorization, `model
    memorization`); with a GPU the model must land there without a flag (issue 10: the code runs on CUDA without
    edits). CPU-only here, so the move is recorded instead of made."""
    import dlsearch.finetune.loading as loading

    moved: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *a, **k):
        if a and isinstance(a[0], str):  # a device move (not a dtype cast inside from_pretrained)
            moved.append(a[0])
            return self
        return real_to(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        loading.load_model(hf_dir)
        loading.load_finetuned(hf_dir)
        assert moved == ["cuda", "cuda"]
        loading.load_model(hf_dir, device="cpu")  # an explicit device wins (already there: no move)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        loading.load_model(hf_dir)
    assert moved == ["cuda", "cuda"]
