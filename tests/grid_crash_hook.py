"""A trial hook for the grid's fault tests (grid/tune_runner.py: ``COLLAPSE_RAY_TRIAL_HOOK``).

With ``COLLAPSE_RAY_TRIAL_HOOK=tests.grid_crash_hook:crash_once`` and ``CRASH_ENV`` holding
comma-separated ``<trial>:<generation>:<phase>`` entries, that trial's driver dies (os._exit) once,
at phase "train" (model saved, generation unfinished) or "report" (MLflow logged, Tune not told).
A marker file in the trial's directory makes it once: the retried driver runs through.
``FAIL_ENV`` holding ``<trial>:<generation>`` entries makes that trial's training raise at that
generation every time, so it fails for real once Tune's retries are spent.

Armed, the hook also records what every trial's drivers do, in order (``events``): a test reads
which generations ran before and after a fault from that order, not from clocks or file times.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from collapse_ray.trial_state import trial_dir

HOOK = "tests.grid_crash_hook:crash_once"
EVENTS_FILE = ".hook-events"
CRASH_ENV = "COLLAPSE_RAY_GRID_CRASH_ONCE"
FAIL_ENV = "COLLAPSE_RAY_GRID_FAIL_ALWAYS"
INJECTED = "injected failure"


def arm(monkeypatch, entries: str) -> None:
    """Install the hook for the grid this test runs (its Ray workers inherit the environment)."""
    from collapse_ray.grid.tune_runner import TRIAL_HOOK_ENV

    monkeypatch.setenv(TRIAL_HOOK_ENV, HOOK)
    monkeypatch.setenv(CRASH_ENV, entries)


def events(state_dir: Path) -> list[str]:
    """What the drivers of the trial in ``state_dir`` did, in order: ``train:<g>`` when generation
    g's model is trained, ``report:<g>`` when g is finished and logged (Tune not told yet),
    ``died:<phase>:<g>`` where one was killed here, and what tests ``note``."""
    path = state_dir / EVENTS_FILE
    return path.read_text().split() if path.exists() else []


def note(state_dir: Path, event: str) -> None:
    with open(state_dir / EVENTS_FILE, "a") as f:   # a trial runs one driver at a time: no interleaving
        f.write(event + "\n")


def crash_once(cfg, trainer, report):
    crash = _CrashOnce.from_env(cfg.name, trial_dir(cfg.output_dir, cfg.name))

    def crashing_report(generation, metrics, gen_dir):
        crash.at(generation, "report")
        report(generation, metrics, gen_dir)

    return _CrashingTrainer(trainer, crash), crashing_report


class _CrashOnce:
    def __init__(self, state_dir: Path, generation: int | None, phase: str | None, fail_at: set[int]):
        self.state_dir, self.generation, self.phase, self.fail_at = state_dir, generation, phase, fail_at
        self.marker = state_dir / f".crashed-gen{generation}-{phase}"

    @classmethod
    def from_env(cls, trial: str, state_dir: Path) -> "_CrashOnce":
        fail_at = {int(parts[1]) for parts in _entries(FAIL_ENV) if len(parts) == 2 and parts[0] == trial}
        for parts in _entries(CRASH_ENV):
            if len(parts) == 3 and parts[0] == trial:
                return cls(state_dir, int(parts[1]), parts[2], fail_at)
        return cls(state_dir, None, None, fail_at)

    def at(self, generation: int, phase: str) -> None:
        note(self.state_dir, f"{phase}:{generation}")
        if (generation, phase) == (self.generation, self.phase) and not self.marker.exists():
            self.marker.write_text("crashed once\n")
            note(self.state_dir, f"died:{phase}:{generation}")
            print(f"[{CRASH_ENV}] killing this trial driver at generation {generation}, phase {phase}",
                  file=sys.stderr, flush=True)
            os._exit(1)
        if phase == "train" and generation in self.fail_at:
            raise RuntimeError(f"{INJECTED}: this trial always fails at generation {generation}")


def _entries(env: str) -> list[list[str]]:
    return [entry.strip().split(":") for entry in os.environ.get(env, "").split(",") if entry.strip()]


class _CrashingTrainer:
    """Passes through to the real trainer; lets the crash (or failure) fire after a generation's training."""

    def __init__(self, inner, crash: _CrashOnce):
        self.inner, self.crash = inner, crash

    def close(self):
        self.inner.close()

    def train(self, init, texts, out_dir, seed, cfg=None):
        result = self.inner.train(init, texts, out_dir, seed)
        self.crash.at(int(Path(out_dir).parent.name.removeprefix("gen_")), "train")
        return result
