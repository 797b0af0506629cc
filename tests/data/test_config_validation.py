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


@dataclass
class Leaf:
    on: bool = True
    n: int = 1
    lr: float = 1.0
    tag: str = "t"


@dataclass
class Tree:
    need: int
    leaves: list[Leaf] = field(default_factory=list)
    best: Leaf | None = None


@pytest.mark.parametrize("data, message", [
    ({"need": 1, "best": {"on": "no"}}, r"t\.best\.on: expected true or false, got str 'no'"),  # never coerced to False
    ({"need": 1, "best": {"on": 1}}, r"t\.best\.on: expected true or false, got int 1"),
    ({"need": 1, "best": {"n": "3"}}, r"t\.best\.n: expected an integer, got str '3'"),
    ({"need": 1, "best": {"n": 2.0}}, r"t\.best\.n: expected an integer, got float 2.0"),
    ({"need": 1, "best": {"n": True}}, r"t\.best\.n: expected an integer, got bool True"),
    ({"need": 1, "best": {"lr": True}}, r"t\.best\.lr: expected a number, got bool True"),
    ({"need": 1, "best": {"lr": "nan"}}, r"t\.best\.lr: expected a finite number"),
    ({"need": 1, "best": {"tag": 3}}, r"t\.best\.tag: expected a string, got int 3"),
    ({"need": 1, "leaves": [{}, {"nn": 2}]}, r"unknown field 't\.leaves\[1\]\.nn'; did you mean 'n'"),
    ({"need": 1, "leaves": {"on": True}}, r"t\.leaves: expected a list"),
    ({}, r"t\.need: required, missing"),
    ({"need": "x", "best": {"on": "no"}}, r"t\.need: expected an integer.*; t\.best\.on: expected true or false"),  # every bad key
])
def test_pydantic_rules_for_yaml(data, message) -> None:
    """The validator is pydantic's, tightened for YAML: strict scalars, floats that accept numeric strings but not
    bools or inf/nan, forbidden unknown keys; each error names the full dotted key."""
    with pytest.raises(ConfigError, match=message):
        from_dict(Tree, data, "t")


def test_pydantic_rules_accept_what_yaml_gives() -> None:
    cfg = from_dict(Tree, {"need": 2, "leaves": [{"lr": 3}, {"lr": "1e-3", "on": False}], "best": None})
    assert cfg.leaves == [Leaf(lr=3.0), Leaf(lr=1e-3, on=False)] and isinstance(cfg.leaves[0].lr, float)
    assert from_dict(Outer, {"sizes": (5,)}).sizes == (5,)  # a tuple field takes a YAML list or a tuple
