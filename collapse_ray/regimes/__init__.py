"""Regime registry: a regime is one module of this package holding a ``Regime`` subclass that
registers itself by name. Modules are found with pkgutil, so adding a regime is adding a file."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from collapse_ray.regimes.base import History, Regime, provenance, sample
from collapse_ray.typed import ConfigError, build, join, require

__all__ = ["History", "Regime", "provenance", "sample", "register_regime", "regime_names", "regime_class",
           "parse_regime", "default_regime"]

DEFAULT_REGIME = "synthetic-only"
_REGISTRY: dict[str, type[Regime]] = {}
_discovered = False


def register_regime(name: str):
    def deco(cls: type[Regime]) -> type[Regime]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base" and not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def regime_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def regime_class(name: str) -> type[Regime]:
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown regime {name!r}; known regimes: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def default_regime() -> Regime:
    return regime_class(DEFAULT_REGIME)()


def _parameters(cls: type[Regime]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def parse_regime(value: Any, where: str = "regime") -> Regime:
    """A regime from its config: a name, or a mapping of ``name`` and the regime's own parameters
    (``{name: hybrid, alpha: 0.5}``). A parameter of another regime is refused by name."""
    if isinstance(value, str):
        value = {"name": value}
    require(isinstance(value, dict), where, f"expected a regime name or a mapping with name, got {value!r}")
    data = dict(value)
    name = data.pop("name", DEFAULT_REGIME)
    require(isinstance(name, str) and name in regime_names(), join(where, "name"),
            f"unknown regime {name!r}; known regimes: {', '.join(regime_names())}")
    cls = _REGISTRY[name]
    for key in sorted(set(data) - set(_parameters(cls))):
        owners = [n for n in regime_names() if key in _parameters(_REGISTRY[n])]
        takes = ", ".join(_parameters(cls)) or "no parameters"
        raise ConfigError(f"{join(where, key)}: only applies to regime {', '.join(owners)}" if owners else
                          f"{join(where, key)}: unknown field; regime {name} takes {takes}")
    return build(cls, data, where)
