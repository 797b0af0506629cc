"""The one YAML -> dataclass validator every area loads its configs through."""

from dataclasses import dataclass, field

import pytest

from dlsearch.data.config import ConfigError, from_dict, load_yaml, parse_override, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int | None = None


@dataclass
class Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    options: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise ValueError("name must not be 'bad'")


def test_nested_values_are_checked_and_converted() -> None:
    cfg = from_dict(Outer, {"sizes": [3, 4], "inner": {"lr": "2e-3", "steps": None}, "options": {"a": 1}})
    assert cfg.sizes == (3, 4) and cfg.inner.lr == 2e-3 and cfg.options == {"a": 1.0}
    assert to_dict(cfg) == {"name": "x", "sizes": [3, 4], "inner": {"lr": 2e-3, "steps": None}, "options": {"a": 1.0}}


@pytest.mark.parametrize("data, message", [
    ({"inner": {"lrr": 1}}, r"unknown field 'cfg.inner.lrr'; did you mean 'lr'"),
    ({"sizes": [1, "two"]}, r"cfg.sizes\[1\]: expected an integer"),
    ({"inner": {"steps": 1.5}}, r"cfg.inner.steps: expected an integer, got float 1.5"),  # an optional int: the int error
    ({"inner": 3}, r"cfg.inner: expected a mapping of Inner fields"),
    ({"name": "bad"}, r"cfg: name must not be 'bad'"),
    ({"name": True}, r"cfg.name: expected a string"),
])
def test_bad_fields_are_named(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data, "cfg")


def test_yaml_files_and_overrides(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(tmp_path / "broken.yaml")
    assert parse_override("sizes=[250, 1000]") == ("sizes", [250, 1000])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("seed")
