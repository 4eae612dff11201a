"""SIGINT (Ctrl-C) and SIGTERM (kill, Slurm, Kubernetes) stop a running grid within 30 s, keep every
finished generation, mark the stopped trials' MLflow runs KILLED, print one line saying how to
resume; `--resume` then finishes the grid. The real CLI in a subprocess, local Ray."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from collapse_ray.errors import EXIT_CODE
from tests.grids import tiny_grid

REPO = Path(__file__).resolve().parents[1]


def launch(config: Path, cwd: Path, *extra: str) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    """The grid CLI, and its output lines as a thread reads them (the thread ends at its end)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local"}
    proc = subprocess.Popen([sys.executable, "-m", "collapse_ray.cli", "grid", str(config), *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, lines, reader


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_grid_within_30_s_and_resume_finishes_it(tmp_path, tiny_base_model, data_dir, signum):
    config = tiny_grid(tmp_path, tiny_base_model, data_dir, generations=3)
    proc, lines, reader = launch(config, tmp_path)
    deadline = time.monotonic() + 1200
    while not any("generation 0/3 done" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.5)
    proc.send_signal(signum)
    sent = time.monotonic()
    proc.wait(timeout=120)
    assert time.monotonic() - sent <= 30, "".join(lines)   # the README's promise
    reader.join(timeout=60)   # it has read the last line once the output ends
    console = "".join(lines)
    assert proc.returncode == EXIT_CODE, console
    assert "Traceback" not in console
    last = console.strip().splitlines()[-1]
    assert last.startswith("error: grid g: interrupted with") and last.endswith("continue with --resume"), console

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "g"]
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "regime" in r.data.tags]
    assert trials and all(r.info.status in ("KILLED", "FINISHED") for r in trials), [r.info.status for r in trials]
    assert any(r.info.status == "KILLED" for r in trials)
    kept = {p.parent.parent.name: p for p in (tmp_path / "runs").glob("tiny_*/gen_00/COMPLETE.json")}
    assert kept   # finished generations stay on disk

    proc, lines, _ = launch(config, tmp_path, "--resume")
    assert proc.wait(timeout=1800) == 0, "".join(lines)
    for run in client.search_runs([experiment.experiment_id]):
        if "regime" in run.data.tags:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
            assert steps == [0, 1, 2, 3], (run.info.run_name, steps)
