"""One grid launch in MLflow: its parent run (the trials' runs nest under it) and, at the end,
the report of its trials logged to that run (no Ray here).

    launch = GridLaunch(grid, trials, state_dir, say)
    parent_run_id = launch.start(resume)     # a new parent run, or on --resume the launch's own
    ...                                      # trials: run_trial(..., parent_run_id=parent_run_id)
    launch.finish("FINISHED" | "FAILED" | "KILLED", report=True)
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

from collapse_ray.grid.expand import Trial
from collapse_ray.grid.spec import GridConfig
from collapse_ray.tracking import GridRunTracker

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def grid_state_dir(grid: GridConfig, trials: list[Trial]) -> Path:
    """This machine's directory of the grid's state: Tune's experiment when it is stored here
    (``tune.storage_path`` local, default ``output_dir/_tune``), else ``output_dir/_tune/<name>``.
    It holds the launch lock, the parent run's id, the logs and the report."""
    storage = grid.tune.storage_path
    if storage and "://" not in storage:
        return Path(storage).expanduser().resolve() / grid.name
    return Path(trials[0].config.output_dir) / "_tune" / grid.name


def grid_params(grid: GridConfig) -> dict:
    """The grid config as the parent run's params (nested; tracking.py flattens it)."""
    asdict = dataclasses.asdict
    return {
        "name": grid.name,
        "base": grid.base,
        "grid": {"models": [asdict(m) for m in grid.models], "tasks": [asdict(t) for t in grid.tasks],
                 "regimes": [r.label() for r in grid.regimes], "seeds": list(grid.seeds),
                 "mitigations": {label: asdict(m) for label, m in grid.mitigations.items()}},
        "resources": asdict(grid.resources),
        "tune": asdict(grid.tune),
        "cluster": asdict(grid.cluster) if grid.cluster else None,
    }


class GridLaunch:
    def __init__(self, grid: GridConfig, trials: list[Trial], state_dir: str | Path, say: Callable[[str], None]):
        tracking = trials[0].config.tracking   # one experiment per grid (expand.py checks it)
        self.grid, self.state_dir, self.say = grid, Path(state_dir), say
        self.uri, self.experiment = tracking.uri, tracking.experiment
        self.tracker = GridRunTracker(self.uri, self.experiment, retry_minutes=tracking.retry_minutes)
        self.run_id: str | None = None

    def start(self, resume: bool) -> str:
        """The parent run: on ``--resume`` the one this grid's state names (when its store still
        holds it), else a new one."""
        state_file = self.state_dir / GridRunTracker.STATE_FILE
        if not resume:
            state_file.unlink(missing_ok=True)   # a new launch: a new parent run
        self.run_id = self.tracker.start(self.grid.name, grid_params(self.grid), self.state_dir)
        self.say(f"[grid] MLflow: parent run {self.run_id} in experiment {self.experiment!r} at {self.uri}")
        return self.run_id

    def finish(self, status: str, report: bool) -> None:
        """Build the launch's report (when asked) and log it to the parent run, then end the run."""
        try:
            if report:
                self._report()
        finally:
            self.tracker.finish(status)

    def _report(self) -> None:
        from collapse_ray.report import ReportError, build_report

        out = self.state_dir / REPORT_DIR
        try:
            files = build_report(self.experiment, self.uri, out, parent_run_id=self.run_id)
        except ReportError as e:
            self.say(f"[grid] report: not written ({e})")
            return
        except Exception as e:   # noqa: BLE001 - the grid's outcome matters more than its report
            log.exception("building the grid's report failed")
            self.say(f"[grid] report: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                     f"traceback in the grid's log; `collapse-ray report {self.experiment} --parent-run "
                     f"{self.run_id}` retries it")
            return
        self.say(f"[grid] report: {files.report} ({len(files.figures)} figures; logged to the parent run "
                 f"under {REPORT_DIR}/)")
