"""YAML configs for evaluation entry points: a dataclass per entry point, validated by the shared data.config.

    cfg = load_config("configs/sweep-tiny.yaml", SweepConfig, overrides=["seed=1"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from dlsearch.data.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict  # noqa: F401  (re-exported)

T = TypeVar("T")


def config_from_dict(data: dict[str, Any], cls: type[T], *, source: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming source and key."""
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read a YAML file into dataclass `cls`, apply `a.b.c=value` overrides (the --set syntax of every verb), validate."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return config_from_dict(data, cls, source=str(path))


config_to_dict = to_dict  # a dataclass config as plain JSON-able data (tuples become lists)
