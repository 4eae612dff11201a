"""The grid's console: one line per trial start, finished generation (the task's headline
metrics and, from an attempt's second generation on, the trial's ETA), retry and end; everything
else goes to log files (no Ray here).

    <grid state>/logs/grid.log       the grid driver: Ray, Tune (its trial table, tracebacks of
                                     failed drivers), Ray Train workers' and vLLM actors' output
    <grid state>/logs/<trial>.log    that trial's driver: its phase lines, library output, and the
                                     traceback of its failure
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TextIO

from collapse_ray.grid.expand import Trial
from collapse_ray.progress import format_duration

GRID_LOG = "grid.log"
# The last line of a Python traceback: "RuntimeError: ..." or "ray.exceptions.RayTaskError(...): ..."
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(\([\w.]*\))?: ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")   # Ray colours the first line of a task's error


def logs_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "logs"


def trial_log(state_dir: str | Path, trial: str) -> Path:
    return logs_dir(state_dir) / f"{trial}.log"


def error_summary(text: str | None, limit: int = 300) -> str:
    """One line for the latest failure in a Tune error file (which appends each failure, across
    launches too, under "Failure # N"): a traceback's exception line, else (a process that died)
    the first line of the message."""
    latest = _ANSI.sub("", re.split(r"^Failure # \d+.*$", text or "", flags=re.M)[-1])
    lines = [line.strip() for line in latest.splitlines() if line.strip()]
    if not lines:
        return "no error recorded"
    is_traceback = any(line.startswith("File ") for line in lines)   # Ray's task errors drop "Traceback (...)"
    exception_lines = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = exception_lines[-1] if is_traceback and exception_lines else lines[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


class GridConsole:
    """The lines the grid driver prints, for one launch."""

    def __init__(self, trials: list[Trial], state_dir: str | Path, stream: TextIO, max_failures: int):
        from collapse_ray.tasks import headline_metrics

        self.state_dir, self.stream, self.max_failures = Path(state_dir), stream, max_failures
        self.generations = {t.name: t.config.generations for t in trials}   # each trial's last generation
        self.headline = {t.name: headline_metrics(t.config.task.name) for t in trials}
        self.started = time.monotonic()
        self.done: set[str] = set()
        self.starts: dict[str, int] = {}
        # trial -> (when this attempt's first generation ended, generations since): the ETA is paced
        # by the generations after an attempt's first, which alone pays the start-ups (base model,
        # vLLM engine, Train group) or takes a shared generation 0 ready-made.
        self.attempt: dict[str, tuple[float, int] | None] = {}

    def line(self, msg: str) -> None:
        print(msg, file=self.stream, flush=True)

    def progress(self, msg: str) -> None:
        elapsed = time.monotonic() - self.started
        self.line(f"[grid {format_duration(elapsed)}, {len(self.done)}/{len(self.generations)} trials done] {msg}")

    def trial_started(self, name: str) -> None:
        self.starts[name] = self.starts.get(name, 0) + 1
        self.attempt[name] = None
        self.progress(f"{name}: {'restarted' if self.starts[name] > 1 else 'started'}")

    def generation_done(self, name: str, result: dict) -> None:
        generation, last = result.get("generation"), self.generations[name]
        keys = [k for k in (*self.headline[name], "train/loss") if k in result]
        shown = ", ".join(f"{k}={result[k]:.4g}" for k in keys)
        eta, now = "", time.monotonic()
        pace = self.attempt.get(name)
        if name in self.attempt:
            self.attempt[name] = (now, 0) if pace is None else (pace[0], pace[1] + 1)
        if pace is not None and isinstance(generation, int) and generation < last:
            per_generation = (now - pace[0]) / (pace[1] + 1)
            eta = f" (ETA {format_duration(per_generation * (last - generation))})"
        self.progress(f"{name}: generation {generation}/{last} done {shown}{eta}")

    def trial_finished(self, name: str) -> None:
        self.done.add(name)
        self.progress(f"{name}: finished")

    def trial_retried(self, name: str, error_text: str | None, failures: int) -> None:
        self.progress(f"{name}: driver failed ({error_summary(error_text)}); Tune retries it "
                      f"({failures} of {self.max_failures} retries), from its first unfinished generation")

    def trial_failed(self, name: str, error_text: str | None) -> None:
        self.done.add(name)
        self.progress(f"{name}: FAILED: {error_summary(error_text)} (full log: {trial_log(self.state_dir, name)}; "
                      f"Ray and Tune: {logs_dir(self.state_dir) / GRID_LOG})")
