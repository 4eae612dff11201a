"""SIGINT (Ctrl-C) and SIGTERM (kill, Slurm, Kubernetes) stop the real `collapse-ray run` within
seconds, with one line saying how to resume; the MLflow run is marked KILLED, finished
generations are kept, and the rerun continues where the stop came."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from collapse_ray.base_model import build_base_model
from collapse_ray.tracking import GENERATION_KEY
from tests.small_trials import metric_steps, small_config

pytestmark = pytest.mark.timeout(900)


def run_status(cfg) -> str:
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    return run.info.status


@pytest.mark.parametrize("signum, phase", [
    pytest.param(signal.SIGINT, "generate", marks=pytest.mark.slow),   # ~4 min each on the loaded machine
    (signal.SIGTERM, "evaluate"),
])
def test_a_signal_stops_the_run_cleanly_and_the_rerun_resumes(tmp_path, tiny_cache, signum, phase):
    cfg = small_config(tmp_path, tiny_cache, generations=1)
    build_base_model(cfg.model.tiny, progress=lambda msg: None)
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    cli = [sys.executable, "-m", "collapse_ray.cli", "run", str(config_file)]

    started = time.monotonic()
    proc = subprocess.Popen(cli, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first_line_after = None
    for line in proc.stderr:
        first_line_after = first_line_after or time.monotonic() - started
        if f"gen 1/1 {phase} ..." in line:
            sent = time.monotonic()
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signum)     # a terminal's Ctrl-C reaches the whole process group
            else:
                proc.send_signal(signum)        # kill / Slurm / Kubernetes signal the process
            break
    rest = proc.communicate(timeout=120)[1]
    stopped_after = time.monotonic() - sent

    assert proc.returncode == 128 + signum, rest
    assert stopped_after < 10, stopped_after         # README: "within seconds": 10x one second
    assert first_line_after < 10, first_line_after   # ~10x its 1-2 s on a quiet machine
    assert "Traceback" not in rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {signal.Signals(signum).name}: 1 finished generation(s) kept in "), last
    assert last.endswith(f"resume with: collapse-ray run {config_file}"), last
    assert run_status(cfg) == "KILLED"
    assert metric_steps(cfg, GENERATION_KEY)[1] == [0]

    resumed = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "gen 0/1 started" not in resumed.stderr and "gen 1/1 started" in resumed.stderr
    assert run_status(cfg) == "FINISHED"
    assert metric_steps(cfg, GENERATION_KEY)[1] == [0, 1]
