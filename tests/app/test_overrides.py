"""One `--set a.b.c=value` syntax for every verb (data.config.apply_overrides), validated by the one validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsearch.app.sweep import SweepConfig
from dlsearch.data.config import ConfigError
from dlsearch.evaluation.config import load_config
from dlsearch.retrieval.build import load_dual_config

REPO = Path(__file__).resolve().parents[2]


def test_sweep_accepts_nested_step_options() -> None:
    """issue 13: `sweep --set step_options.num_beams=4` was refused (the key was taken as one flat name)."""
    cfg = load_config(REPO / "configs" / "sweep-tiny.yaml", SweepConfig,
                      ["step_options.num_beams=4", "step_options.dual.epochs=2", "seed=3"])
    assert cfg.step_options["num_beams"] == 4 and cfg.step_options["dual"]["epochs"] == 2 and cfg.seed == 3
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        load_config(REPO / "configs" / "sweep-tiny.yaml", SweepConfig, ["sed=3"])


def test_dual_build_uses_the_same_syntax_and_validator() -> None:
    cfg = load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["epochs=2", "lr=1e-3"])
    assert cfg.epochs == 2 and cfg.lr == 1e-3
    with pytest.raises(ConfigError, match=r"dual_encoder.yaml: unknown field 'epoch'; did you mean 'epochs'"):
        load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["epoch=2"])
    with pytest.raises(ConfigError, match=r"lr: expected a finite number"):
        load_dual_config(REPO / "configs" / "dual_encoder.yaml", sets=["lr=.inf"])


def test_every_config_verb_has_set() -> None:
    from dlsearch.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    build = next(a for a in sub["index"]._actions if a.__class__.__name__ == "_SubParsersAction").choices["build"]
    for p in (sub["finetune"], sub["evaluate"], sub["sweep"], sub["recommend"], sub["quickstart"], sub["serve"], build):
        assert any("--set" in a.option_strings for a in p._actions), p.prog


def test_serve_set_overrides_the_config_and_its_server_section(tmp_path) -> None:
    """issue 13: `dlsearch serve` had no --set. The same apply_overrides, then the same validator, for the recommend
    part and for the server: section (whose types were not checked: `port: "x"` passed)."""
    from dlsearch.app.serve import read_serve_config

    serve_yaml = REPO / "configs" / "serve.yaml"
    cfg, settings = read_serve_config(serve_yaml, sets=["k=20", "server.port=9001", "strategies.bm25.enabled=false"])
    assert cfg["k"] == 20 and settings.port == 9001 and cfg["strategies"]["bm25"]["enabled"] is False
    with pytest.raises(ConfigError, match=r"serve\.yaml: unknown field 'server\.prot'; did you mean 'port'"):
        read_serve_config(serve_yaml, sets=["server.prot=1"])
    with pytest.raises(ConfigError, match=r"serve\.yaml: server\.port: expected an integer, got str 'x'"):
        read_serve_config(serve_yaml, sets=["server.port=x"])
    with pytest.raises(ConfigError, match=r"serve\.yaml: server\.max_k: must be >= 1, got 0"):
        read_serve_config(serve_yaml, sets=["server.max_k=0"])


def test_serve_cli_set(monkeypatch, capsys) -> None:
    import dlsearch.app.serve as app_serve
    from dlsearch.cli import main

    served = []
    monkeypatch.setattr(app_serve, "serve", lambda router, catalog, settings, *rest: served.append(settings))
    routers = []  # no BM25 build: only settings and the router's options matter
    monkeypatch.setattr(app_serve, "catalog_only_router", lambda catalog, **options: routers.append(options))
    catalog = str(REPO / "tests" / "app" / "data" / "none.jsonl")
    monkeypatch.setattr("dlsearch.data.catalog.load_catalog_jsonl", lambda path: None)
    assert main(["serve", "--catalog", catalog, "--set", "server.max_k=7", "--port", "9002"]) == 0
    assert served[0].max_k == 7 and served[0].port == 9002
    # without --config only the server: section can be set; a config key is refused by name
    assert main(["serve", "--catalog", catalog, "--set", "k=5"]) == 2
    assert "error:" in capsys.readouterr().err
    # a shop served from its catalog alone can switch off linking and the movie-chat stopwords (regression: only
    # server.* could be set, so `serve --catalog` always linked titles and dropped "watch" from queries)
    shop = ["--set", "policy.link_mentions=false", "--set", "strategies.bm25.query_stopwords=none"]
    assert main(["serve", "--catalog", catalog, *shop]) == 0
    assert routers[-1] == {"link_mentions": False, "query_stopwords": "none"}
    assert main(["serve", "--catalog", catalog, "--set", "policy.rrf_k=3"]) == 2
    assert "--set policy.rrf_k: without --config only server.*" in capsys.readouterr().err
    assert main(["serve", "--catalog", catalog, "--set", "strategies.bm25.query_stopwords=movies"]) == 2
    assert "strategies.bm25.query_stopwords: must be one of" in capsys.readouterr().err
    assert main(["serve", "--config", str(REPO / "configs" / "serve.yaml"), "--set", "server.prot=1"]) == 2
    assert "did you mean 'port'" in capsys.readouterr().err
