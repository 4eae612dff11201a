"""Typed dataclasses from YAML mappings, with errors that name the field (``training.lr: ...``).

The experiment config (config.py), the regimes and the tasks' options are all built here, so a bad
value reads the same wherever it is written. It imports nothing of the project but errors.py
(stdlib only): config.py imports the regimes and tasks, and they import this.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from collapse_ray.errors import ConfigError


def require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def build(cls: type, data: Any, where: str):
    """An instance of dataclass ``cls`` from a mapping. Unknown and missing required fields are
    errors; a field whose type has ``from_config(value, where)`` is built by it (a regime); an
    instance with ``check(where)`` checks its own values."""
    if not isinstance(data, dict):
        got = "nothing (an empty section)" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {got}; "
                          f"allowed fields: {', '.join(f.name for f in dataclasses.fields(cls) if f.init)}")
    hints = typing.get_type_hints(cls)
    settable = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in settable}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{join(where, unknown[0])}: unknown field; allowed fields: {', '.join(sorted(names))}"
        )
    for f in settable:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        require(not required or f.name in data, join(where, f.name), "is required")
    obj = cls(**{k: coerce(hints[k], v, join(where, k)) for k, v in data.items()})
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and hasattr(tp, "from_config"):
        return tp.from_config(value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(inner, value, where)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):   # not `value or {}`: a 0, '' or [] is a mistake, not an empty section
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):   # YAML's .nan / .inf: every float field needs a real number
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if not -2**63 <= value < 2**63:   # torch, numpy and vLLM overflow past it, far into a run
            raise ConfigError(f"{where}: {value} does not fit a 64-bit integer; every integer field is far below that")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
