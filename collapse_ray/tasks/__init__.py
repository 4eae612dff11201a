"""Task registry: a task is one module that registers itself by name."""
from __future__ import annotations

import importlib
from typing import Callable

_REGISTRY: dict[str, Callable[[], object]] = {}
_BUILTIN_MODULES = ("codegen", "vulnerability", "summarization")


def register_task(name: str):
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"collapse_ray.tasks.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"collapse_ray.tasks.{module}":
                raise


def registered_tasks() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def task_data_sources(name: str) -> dict[str, str]:
    """What ``task.data_path`` may be for this task (read from its class, without building it)."""
    _load_builtins()
    return getattr(_REGISTRY.get(name), "data_sources", {"file": "a file", "dir": "a directory"})


def get_task(name: str):
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()
