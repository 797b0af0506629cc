"""YAML configs -> dataclasses, for every area: one validator, so every config names its bad field the same way.

    cfg = from_dict(SweepConfig, load_yaml("configs/sweep-tiny.yaml"), "configs/sweep-tiny.yaml")

Every key must name a dataclass field: an unknown or misspelled key is a `ConfigError` that names the dotted key and
the closest valid name; a value of the wrong type is refused with the expected type; nested dataclasses, lists,
tuples, dicts and unions (`int | None`) are checked recursively. The recipes of finetune, the evaluation entry points
and retrieval's router policy and dual-encoder settings all load through here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; the message names the file, key and fix."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert: int -> float, "1e-3" -> float, list -> tuple) a YAML value against a type hint."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # X | None with a value: X's own error names the nested key (not "expected X or None")
            return _convert(value, arms[0], where)
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        elem = args[0] if args else Any
        items = [_convert(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(k, kt, f"{where} key"): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):  # .inf / .nan: no setting of ours means anything with them (lr: .inf trained NaNs)
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {tp} at {where}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping. Unknown keys are refused with the closest valid name, wrong types with the
    expected one, and a value the dataclass itself rejects (its __post_init__) with `where` in front."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown field '{full}'{hint} (valid: {', '.join(names)})")
        kwargs[key] = _convert(value, hints[key], full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    except ValueError as e:  # the dataclass's own checks; "field: why" messages join the dotted path
        msg = str(e)
        head = msg.split(":", 1)[0]
        if where and head.split(".")[0] in names:
            raise ConfigError(f"{where}.{msg}") from None
        raise ConfigError(f"{where}: {msg}" if where else msg) from None


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with the value parsed as YAML (so 'sizes=[250, 1000]', 'seed=1' and 'lr=1e-3' work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. seed=1 or stages.0.train.lr=1e-3")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def packaged_configs() -> Path:
    """The configs shipped with the package (dlsearch.configs: configs/ of the repository, or of the install)."""
    import dlsearch.configs

    return Path(dlsearch.configs.__file__).resolve().parent


def resolve_config_path(path: str | Path, *, relative_to: str | Path | None = None) -> Path:
    """Where a config path points: an absolute path as is; a relative one next to `relative_to` (the folder of
    the config file that names it), else from the working directory, else the shipped copy (a leading
    'configs/' names the package's configs), so every verb works from any directory after `pip install .`.
    A path found nowhere is returned as given (the caller reports it missing)."""
    p = Path(path)
    if p.is_absolute():
        return p
    if relative_to is not None and (Path(relative_to) / p).exists():
        return Path(relative_to) / p
    if p.exists():
        return p
    packaged = packaged_configs() / (Path(*p.parts[1:]) if p.parts and p.parts[0] == "configs" else p)
    return packaged if packaged.exists() else p


def resolve_input_path(value: str | None, config: str | Path | None) -> str | None:
    """A path a config file names for reading (a dataset, a model, an index), resolved by resolve_config_path
    relative to that file's folder first; None or "" unchanged, as is every path when there is no config file.
    Outputs (output_dir, out, cache_dir) stay relative to the working directory: a shipped config must not write
    into the installed package."""
    if not value or config is None:
        return value
    return str(resolve_config_path(value, relative_to=Path(config).resolve().parent))


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, *, defaults: Any) -> None:
    """Set `a.b.c` in a raw YAML tree; list elements by index or (stages) by name."""
    parts = dotted.split(".")
    node: Any = tree
    default_node: Any = defaults
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = None
            if p.isdigit():
                idx = int(p)
            else:
                for j, el in enumerate(node):
                    if isinstance(el, dict) and el.get("name") == p:
                        idx = j
            if idx is None or idx >= len(node):
                names = [el.get("name") for el in node if isinstance(el, dict)]
                raise ConfigError(f"override {dotted!r}: no list element {p!r} (by index or name: {names})")
            if last:
                node[idx] = value
                return
            node = node[idx]
            default_node = None
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[p] = value
            return
        if p not in node:
            # Start from the dataclass default so the override only changes one key.
            sub = getattr(default_node, p, None) if default_node is not None else None
            if isinstance(sub, list):
                node[p] = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sub]
            else:
                node[p] = {}
        default_node = getattr(default_node, p, None) if default_node is not None else None
        node = node[p]


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str], *, defaults: Any = None) -> dict[str, Any]:
    """Apply `--set a.b.c=value` strings (value parsed as YAML) to a raw config tree, in place, and return it. Every
    verb uses this one syntax; `defaults` (a default config instance) seeds a missing sub-mapping so that an
    override changes one key only. The result is validated afterwards by from_dict like the file itself."""
    for ov in overrides:
        key, value = parse_override(ov)
        set_dotted(tree, key, value, defaults=defaults)
    return tree


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping; a missing file, invalid YAML or a non-mapping is a named ConfigError.
    A relative path not found from the working directory is looked up in the shipped configs."""
    path = resolve_config_path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(tree).__name__}")
    return tree


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
