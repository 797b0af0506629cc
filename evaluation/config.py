"""YAML configs for evaluation entry points: a dataclass per entry point, unknown keys rejected by name.

    cfg = load_config("configs/sweep-tiny.yaml", SweepConfig, overrides=["seed=1"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; the message names file and key."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert: int -> float, list -> tuple) a YAML value against a type hint."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def config_from_dict(data: dict[str, Any], cls: type[T], *, source: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: key '{k}'") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{source}: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with the value parsed as YAML (so 'sizes=[250, 1000]' and 'seed=1' work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def load_config(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read a YAML file into dataclass `cls`, apply key=value overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    for ov in overrides or []:
        k, v = parse_override(ov)
        data[k] = v
    return config_from_dict(data, cls, source=str(path))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
