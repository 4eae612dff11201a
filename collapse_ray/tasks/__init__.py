"""Task registry: a task is one module of this package holding a class that registers itself by
name. Modules are found with pkgutil, so adding a task is adding a file."""
from __future__ import annotations

import importlib
import pkgutil

_REGISTRY: dict[str, type] = {}
# Task modules this install cannot import, with the missing package: a grid dry-run still plans them.
_UNAVAILABLE: dict[str, str] = {}
_discovered = False


def register_task(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        return cls
    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base" or module.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except ModuleNotFoundError as e:
            if e.name is None or e.name.split(".")[0] == __name__.split(".")[0]:
                raise   # a bug in the project, not a missing optional package
            _UNAVAILABLE[module.name] = e.name
    _discovered = True


def registered_tasks() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def unavailable_tasks() -> dict[str, str]:
    """Task modules that could not be imported here -> the package they miss."""
    _discover()
    return dict(_UNAVAILABLE)


def task_data_sources(name: str) -> dict[str, str]:
    """What ``task.data_path`` may be for this task (read from its class, without building it)."""
    _discover()
    return getattr(_REGISTRY.get(name), "data_sources", {"file": "a file", "dir": "a directory"})


def task_class(name: str) -> type:
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def tasks_with_pool_tests() -> list[str]:
    """Tasks whose pool prompts come with tests (what mitigation.execution_filter runs)."""
    _discover()
    return sorted(name for name, cls in _REGISTRY.items() if cls.pool_has_tests)


def headline_metrics(name: str) -> tuple[str, ...]:
    """The metrics that summarise a task (progress lines, reports)."""
    return task_class(name).headline_metrics


def get_task(name: str, options=None):
    """The task, with ``options``: its Options instance, a mapping (checked here), or None (defaults)."""
    cls = task_class(name)
    if not isinstance(options, cls.Options):
        options = cls.parse_options(options, "task.options")
    return cls(options)
