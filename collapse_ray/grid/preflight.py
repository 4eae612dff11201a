"""The grid's pre-flight: each trial's own pre-flight (collapse_ray.preflight) for every trial,
before any starts, so a grid that one trial would refuse an hour in (a model that cannot be had,
sizes its data cannot fill, a trial directory of another config) stops now, in one line. Each
check runs once per what it depends on: a tracking URI, a model, a task's split. The launch runs
it, and so does the dry-run where the grid would run (on this machine; a grid planned for a
cluster is checked on its head node). No Ray."""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Iterable

from collapse_ray.errors import CollapseRayError, DataError
from collapse_ray.grid.expand import Trial
from collapse_ray.preflight import check_trial, load_task_data


def preflight_grid(trials: list[Trial], say: Callable[[str], None] = lambda msg: None,
                   skip_tasks: Iterable[str] = ()) -> None:
    """Raise the first trial's error, named by trial (``skip_tasks``: tasks this install lacks,
    which a dry-run plans without checking)."""
    skip = set(skip_tasks)
    checked = [t for t in trials if t.config.task.name not in skip]
    seen: set[str] = set()
    for t in checked:
        try:
            check_trial(t.config, seen)
        except CollapseRayError as e:
            raise type(e)(f"trial {t.name}: {e}") from None
    splits = {json.dumps([dataclasses.asdict(t.config.task), t.config.seed, dataclasses.asdict(t.config.sizes)],
                         sort_keys=True): t.config for t in checked}
    for key in sorted(splits):
        cfg = splits[key]
        say(f"reading the {cfg.task.name} task's data (seed {cfg.seed}) ...")
        try:
            load_task_data(cfg)
        except DataError as e:
            raise DataError(f"grid: task {cfg.task.name} (seed {cfg.seed}) cannot load its data: {e}") from None
