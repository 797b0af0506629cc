"""configs/recommend.yaml is validated by the shared config validator (data/config.py): each defect issue 13 found
is refused with a message naming the key; `--set a.b=c` works on `recommend` like on every other verb; strategies
come from a registry, not from arbitrary imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlsearch.app.recommend import check_config, read_config, strategy_factory
from dlsearch.data.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def base() -> dict:
    return yaml.safe_load((REPO / "configs" / "recommend.yaml").read_text())


def with_(path: str, value) -> dict:
    cfg = base()
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


@pytest.mark.parametrize("path, value, named", [
    ("strategies.bm25.enabled", "no", "strategies.bm25.enabled"),  # left the strategy on
    ("k", 2.7, "k"),  # became 2
    ("k", "ten", "k"),  # invalid literal for int()
    ("k", 0, "k"),
    ("policy.weights", {"bm25": -1.0}, "policy"),  # negative weights passed
    ("strategies.search_api.timeout", "soon", "strategies.search_api.timeout"),  # traceback
    ("strategies.search_api.timeout", 0, "strategies.search_api.timeout"),
    ("strategies.search_api.retries", -1, "strategies.search_api.retries"),
    ("strategies.bm25.query_from", "modle", "strategies.bm25.query_from"),
    ("strategies.concept.aggregate", "max", "strategies.concept.aggregate"),
    ("strategies.dual.indx", "x", "strategies.dual.indx"),
])
def test_bad_values_are_refused_naming_the_key(path, value, named) -> None:
    with pytest.raises(ConfigError, match=rf"{named.replace('.', '[.]')}"):
        check_config(with_(path, value), "r.yaml")


def test_missing_required_keys_name_the_key() -> None:
    cfg = with_("strategies.search_api", {"enabled": True})  # was `error: 'endpoint'`
    with pytest.raises(ConfigError, match=r"strategies\.search_api\.endpoint"):
        check_config(cfg, "r.yaml")
    cfg = with_("strategies.dual", {"enabled": True})  # was `error: 'index'`
    with pytest.raises(ConfigError, match=r"strategies\.dual\.index"):
        check_config(cfg, "r.yaml")
    with pytest.raises(ConfigError, match=r"catalog"):
        check_config({k: v for k, v in base().items() if k != "catalog"}, "r.yaml")
    # a disabled strategy needs nothing
    assert check_config(with_("strategies.search_api", {"enabled": False}), "r.yaml")["strategies"]["search_api"]["enabled"] is False


def test_typo_gets_a_suggestion_and_numbers_convert() -> None:
    with pytest.raises(ConfigError, match="did you mean 'query_from'"):
        check_config(with_("strategies.bm25.query_form", "meta"), "r.yaml")
    cfg = check_config(with_("strategies.search_api.timeout", "2"), "r.yaml")  # a quoted number is a number
    assert cfg["strategies"]["search_api"]["timeout"] == 2.0


def test_set_overrides_dotted_keys(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(base()))
    cfg = read_config(p, sets=["strategies.bm25.enabled=false", "k=20", "policy.weights.bm25=2"])
    assert cfg["k"] == 20 and cfg["strategies"]["bm25"]["enabled"] is False and cfg["policy"]["weights"]["bm25"] == 2.0
    with pytest.raises(ConfigError, match="did you mean 'strategies'"):
        read_config(p, sets=["strategy.bm25.enabled=false"])


def test_paths_resolve_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    """catalog, model_dir and every index named in a recommend config are read next to the config (they were read
    from the working directory); cache_dir, where it writes, stays in the working directory."""
    project = tmp_path / "project"
    for d in ("data", "model", "index/dual", "index/trie"):
        (project / d).mkdir(parents=True)
    (project / "data" / "catalog.jsonl").write_text("")
    cfg = base()
    cfg.update(catalog="data/catalog.jsonl", model_dir="model", cache_dir=".cache/emb")
    cfg["strategies"]["dual"]["index"] = "index/dual"
    cfg["strategies"]["direct"]["options"]["index"] = "index/trie"
    (project / "recommend.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    for read in (lambda: read_config(project / "recommend.yaml"),
                 lambda: __import__("dlsearch.app.serve", fromlist=["x"]).read_serve_config(project / "recommend.yaml")[0]):
        got = read()
        assert Path(got["catalog"]).resolve() == (project / "data" / "catalog.jsonl").resolve()
        assert Path(got["model_dir"]).resolve() == (project / "model").resolve()
        assert Path(got["strategies"]["dual"]["index"]).resolve() == (project / "index" / "dual").resolve()
        assert Path(got["strategies"]["direct"]["options"]["index"]).resolve() == (project / "index" / "trie").resolve()
        assert got["cache_dir"] == ".cache/emb"


def test_factory_comes_from_the_registry_not_an_import() -> None:
    assert callable(strategy_factory("direct"))
    assert strategy_factory("dlsearch.retrieval.direct:direct_from_config") is strategy_factory("direct")  # old spelling
    for bad in ("os:system", "subprocess:run", "dlsearch.data.catalog:load_catalog_jsonl"):
        with pytest.raises(ConfigError, match=r"strategies\.direct\.factory.*registered: .*direct"):
            check_config(with_("strategies.direct.factory", bad), "r.yaml")


def test_cli_does_not_turn_a_key_error_into_a_user_error(monkeypatch) -> None:
    """A KeyError is a bug: it must surface as a traceback, not as `error: 'endpoint'`."""
    import argparse

    import dlsearch.cli as cli

    def boom(args):
        raise KeyError("endpoint")

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(func=boom)

    monkeypatch.setattr(cli, "build_parser", Parser)
    with pytest.raises(KeyError):
        cli.main([])
