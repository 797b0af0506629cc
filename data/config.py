"""YAML configs -> dataclasses, for every area: one validator, so every config names its bad field the same way.

    cfg = from_dict(SweepConfig, load_yaml("configs/sweep-tiny.yaml"), "configs/sweep-tiny.yaml")

Validation is pydantic's (pydantic-core, built from the config dataclass's type hints), with the rules a YAML
config needs: every key must name a dataclass field (an unknown or misspelled key is a `ConfigError` that names the
dotted key and the closest valid name); an int, bool or str field takes only that type (pydantic's strict mode:
`enabled: 'no'`, `k: 2.7`, `k: ten` are refused, never coerced); a float field takes an int, a float or a numeric
string (PyYAML reads `1e-3` as a string), never a bool, and never inf/nan (`lr: .inf` trained NaN weights); nested
dataclasses, lists, tuples, dicts and `X | None` are checked recursively; a dataclass's own `__post_init__` checks
run after its fields are valid. The recipes of finetune, the evaluation entry points, the recommend/serve config and
retrieval's router policy and dual-encoder settings all load through here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import TypeAdapter
from pydantic_core import SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; the message names the file, key and fix."""


# A float field: a strict number (int or float) or a numeric string, parsed; a bool is not a number here. Then
# finite: no setting of ours means anything with inf/nan. (The union's custom error makes "fast" and True one
# `float_type` error instead of one per arm.)
_NUMBER = cs.chain_schema([
    cs.union_schema([cs.float_schema(strict=True, allow_inf_nan=True),
                     cs.chain_schema([cs.str_schema(strict=True), cs.float_schema(strict=False, allow_inf_nan=True)])],
                    custom_error_type="float_type"),
    cs.float_schema(strict=True, allow_inf_nan=False),
])


def _yaml_rules(node: Any) -> None:
    """Tighten pydantic's (lax) core schema of a config dataclass in place: scalar leaves strict, floats as _NUMBER,
    unknown keys forbidden. Containers stay lax on purpose: pydantic's strict mode would refuse a mapping for a
    dataclass (it wants an instance) and a YAML list for a tuple; their items keep their own strict schemas."""
    if isinstance(node, list):
        for x in node:
            _yaml_rules(x)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key not in ("default", "metadata", "cls"):  # a field's default value is data, not schema
            _yaml_rules(value)
    kind = node.get("type")
    if kind in ("int", "bool", "str"):
        node["strict"] = True
    elif kind == "float":
        node.clear()
        node.update(copy.deepcopy(_NUMBER))
    elif kind == "dataclass-args":
        node["extra_behavior"] = "forbid"


@functools.cache
def _validator(cls: type) -> SchemaValidator:
    schema = copy.deepcopy(TypeAdapter(cls).core_schema)
    _yaml_rules(schema)
    return SchemaValidator(schema)


def _dataclass_at(cls: Any, loc: Sequence[Any]) -> Any:
    """The dataclass whose field sits at pydantic error location `loc` below `cls` (None if it is not one)."""
    tp = cls
    for part in loc:
        tp = _unoptional(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            tp = typing.get_type_hints(tp).get(part)
        elif origin in (list, tuple) and isinstance(part, int):
            tp = (typing.get_args(tp) or (Any,))[0]
        elif origin is dict:
            tp = (typing.get_args(tp) or (Any, Any))[1]
        else:
            return None
    tp = _unoptional(tp)
    return tp if dataclasses.is_dataclass(tp) else None


def _unoptional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(arms) == 1:
            return arms[0]
    return tp


def _path(where: str, loc: Sequence[Any]) -> str:
    out = where
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping",
}


def _message(cls: type, err: Any, where: str) -> str:
    """One pydantic error as a config message naming the dotted key; unknown keys get the closest valid name, the
    dataclass's own __post_init__ message ("field: why") joins the dotted path."""
    loc, kind, value = err["loc"], err["type"], err.get("input")
    full = _path(where, loc)
    got = f"got {type(value).__name__} {value!r}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        owner = _dataclass_at(cls, loc[:-1])
        names = [f.name for f in dataclasses.fields(owner)] if owner else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown field '{full}'{hint}" + (f" (valid: {', '.join(names)})" if names else "")
    if kind == "missing":
        return f"{full}: required, missing"
    if kind == "dataclass_type":
        return f"{full or cls.__name__}: expected a mapping of {err['ctx']['class_name']} fields, got {type(value).__name__}"
    if kind == "finite_number":
        return f"{full}: expected a finite number, got {value!r}"
    if kind in _EXPECTED:
        return f"{full}: expected {_EXPECTED[kind]}, {got}"
    if kind in ("value_error", "assertion_error") and "error" in (err.get("ctx") or {}):
        msg = str(err["ctx"]["error"])
        owner = _dataclass_at(cls, loc)
        head = msg.split(":", 1)[0].split(".")[0]
        if full and owner and head in {f.name for f in dataclasses.fields(owner)}:
            return f"{full}.{msg}"
        return f"{full}: {msg}" if full else msg
    return f"{full}: {err['msg']}" if full else err["msg"]


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, validated by pydantic under the rules in the module docstring.

    Raises:
        ConfigError: naming `where` + the dotted key of every bad field: an unknown key (with the closest valid name),
            a wrong type (with the expected one), a missing required field, or a value the dataclass itself rejects
            (its __post_init__; a ConfigError raised there is passed on unchanged).
    """
    try:
        return _validator(cls).validate_python(data)
    except ValidationError as e:
        errors = e.errors()
        for err in errors:  # a ConfigError from __post_init__ already says everything
            if isinstance((err.get("ctx") or {}).get("error"), ConfigError):
                raise err["ctx"]["error"] from None
        raise ConfigError("; ".join(_message(cls, err, where) for err in errors)) from None


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
