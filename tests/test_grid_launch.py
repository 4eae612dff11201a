"""A grid launch: one at a time, into one MLflow experiment; and end to end, as a user runs it:
`collapse-ray grid` (a real subprocess, local Ray, an `mlflow server` on 127.0.0.1) on 2 regimes
x 2 seeds x generations 0..2 of the tiny model, one trial driver killed once (Tune retries it)
and one trial that fails at generation 1 on every attempt; then `collapse-ray report` of that launch.

Checked: the console (one line per trial event, no traceback, one line for the real failure and
where its log is), the MLflow layout (one parent run holding the grid config, every trial nested
under it, statuses), the report the grid logged to its parent run, and the report's PNGs and table
against the runs' metric histories read through MLflow's REST API."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from collapse_ray import grid
from collapse_ray.config import ConfigError
from collapse_ray.errors import EXIT_CODE
from collapse_ray.grid.tune_runner import TRIAL_HOOK_ENV
from tests import grid_crash_hook
from tests.grids import grid_args, tiny_grid, with_change, write
from tests.report_checks import assert_table_matches_histories, histories_via_rest, read_csv, rest, run_report

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "launch"
RETRIED = "tiny_codegen_real-only_s0_none"         # its driver dies once, mid-generation 1
FAILING = "tiny_codegen_synthetic-only_s1_none"    # raises at generation 1 on every attempt
TRIALS = {RETRIED, FAILING, "tiny_codegen_real-only_s1_none", "tiny_codegen_synthetic-only_s0_none"}


@pytest.mark.parametrize("override, field", [({"tracking": {"experiment": "elsewhere"}}, "tracking"),
                                             ({"output_dir": "other-runs"}, "output_dir")])
def test_a_model_that_moves_its_trials_out_of_the_grids_experiment_or_output_dir_is_refused(tmp_path, override,
                                                                                            field):
    data = with_change("grid.models", ["Qwen/Qwen3-0.6B", {"name_or_path": "Qwen/Qwen3-1.7B", "overrides": override}])
    with pytest.raises(ConfigError, match=f"trial qwen3-1.7b_codegen_real-only_s0_none.{field}: .* differs from "
                                          f"trial qwen3-0.6b_codegen_real-only_s0_none's"):
        grid.expand(grid.load_grid(write(tmp_path, data)))


def test_a_second_launch_of_a_running_grid_is_refused_before_ray_starts(tmp_path):
    import ray

    from collapse_ray.launch_lock import LaunchLocked, launch_lock

    config = write(tmp_path, with_change("base.output_dir", str(tmp_path / "runs")))
    with launch_lock(tmp_path / "runs" / "_tune" / "small", where="grid state"):   # the first launch
        with pytest.raises(LaunchLocked, match=r"grid state: .*_tune/small is in use by another launch \(pid "):
            grid.main(grid_args(config))
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_grid_launch_prints_its_progress_nests_its_trials_and_reports(tmp_path, tiny_base_model, data_dir,
                                                                        mlflow_server):
    config = tiny_grid(tmp_path, tiny_base_model, data_dir, name=EXPERIMENT, seeds=(0, 1), max_failures=1,
                       tracking={"uri": mlflow_server, "experiment": EXPERIMENT})
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local",   # a Ray of its own
           TRIAL_HOOK_ENV: grid_crash_hook.HOOK, grid_crash_hook.CRASH_ENV: f"{RETRIED}:1:train",
           grid_crash_hook.FAIL_ENV: f"{FAILING}:1"}
    launch = subprocess.run([sys.executable, "-m", "collapse_ray.cli", "grid", str(config)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=2000)
    console = launch.stdout + launch.stderr
    lines = [line for line in console.splitlines() if line.strip()]

    # The console: the grid's lines only, the first saying where the logs are, the last the CLI's error line.
    assert launch.returncode == EXIT_CODE, console
    state = tmp_path / "runs" / "_tune" / EXPERIMENT
    assert lines[0].startswith(f"[grid] {EXPERIMENT}: Ray's, Tune's and each trial's output go to {state / 'logs'}")
    assert all(line.startswith("[grid") for line in lines[:-1]), console
    assert "Traceback" not in console and "Loading weights" not in console
    for name in TRIALS:
        assert sum(line.endswith(f"] {name}: started") for line in lines) == 1, console
        assert any(f"{name}: generation 0/2 done pass_at_1=" in line for line in lines)
    for name in TRIALS - {RETRIED, FAILING}:   # the ETA comes from an attempt's second generation on
        assert any(f"{name}: generation 1/2 done pass_at_1=" in line and "(ETA " in line for line in lines)
    assert sum(line.endswith(f"{name}: finished") for line in lines for name in TRIALS) == 3
    # A retried failure: one line, its cause. The killed driver's and the failing trial's first attempt.
    retried = {name: [line for line in lines if f"] {name}: driver failed (" in line] for name in (RETRIED, FAILING)}
    assert [len(found) for found in retried.values()] == [1, 1], console
    assert all("Tune retries it (1 of 1 retries)" in found[0] for found in retried.values())
    assert "died" in retried[RETRIED][0] and grid_crash_hook.INJECTED in retried[FAILING][0]
    assert any(f"{RETRIED}: generation 2/2 done" in line for line in lines)
    # The real failure: one line, its cause and its log (the retry line aside, nothing else repeats it).
    failed = [line for line in lines if f"] {FAILING}: FAILED: " in line]
    assert len(failed) == 1 and f"FAILED: RuntimeError: {grid_crash_hook.INJECTED}" in failed[0]
    assert [line for line in lines if grid_crash_hook.INJECTED in line] == [retried[FAILING][0], failed[0]]
    assert lines[-1].startswith(f"error: grid {EXPERIMENT}: 1 trial(s) failed after 1 retries: {FAILING}")
    full_log = Path(re.search(r"full log: ([^;]+);", failed[0]).group(1))
    assert full_log == state / "logs" / f"{FAILING}.log"
    trial_output = full_log.read_text()
    assert trial_output.count(f"RuntimeError: {grid_crash_hook.INJECTED}") >= 2   # both attempts' tracebacks
    assert "Traceback (most recent call last)" in trial_output and f"[{FAILING}] gen 1/2 train ..." in trial_output
    assert "Trial task failed" in (state / "logs" / "grid.log").read_text()   # Tune's own account
    for log in (state / "logs").glob("*.log"):   # the libraries were quiet there too
        assert "View run" not in log.read_text() and "Loading weights" not in log.read_text(), log

    # MLflow: one parent run (the grid config, its launch tags, FAILED), the four trials nested in it.
    parent_id = re.search(r"\[grid\] MLflow: parent run (\w+) ", console).group(1)
    runs = rest(mlflow_server, "runs/search", body={
        "experiment_ids": [rest(mlflow_server, "experiments/get-by-name", {"experiment_name": EXPERIMENT})
                           ["experiment"]["experiment_id"]], "max_results": 100})["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    tags = {rid: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for rid, r in by_id.items()}
    children = {r["info"]["run_name"]: r["info"]["status"] for rid, r in by_id.items() if rid != parent_id}
    assert all(tags[rid].get("mlflow.parentRunId") == parent_id for rid in by_id if rid != parent_id)
    assert children == {**{name: "FINISHED" for name in TRIALS}, FAILING: "FAILED"}
    parent = by_id[parent_id]
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert (parent["info"]["status"], params["base.generations"], params["grid.regimes"]) == \
        ("FAILED", "2", "['real-only', 'synthetic-only']")
    assert {"grid", "launch_id", "launch_time", "git_commit"} <= set(tags[parent_id])
    logged = {f["path"] for f in rest(mlflow_server, "artifacts/list", {"run_id": parent_id, "path": "report"})["files"]}
    assert {"report/report.md", "report/table.csv", "report/long.csv", "report/figures"} <= logged
    assert (state / "report" / "report.md").is_file()

    # `collapse-ray report` of the launch: valid PNGs drawn for the long CSV's metrics; the table
    # equals mean / sd / n computed from the REST histories (n=1 where the failed trial stopped).
    out = tmp_path / "report"
    result = run_report(mlflow_server, EXPERIMENT, out, "--parent-run", parent_id)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    table = read_csv(out / "table.csv")
    metrics = tuple(sorted({row["metric"] for row in table}))
    assert {"pass_at_1", "bleu4"} <= set(metrics) <= {row["metric"] for row in read_csv(out / "long.csv")}
    figures = sorted((out / "figures").glob("*.png"))
    assert {p.name for p in figures} == {f"curves_codegen_{m.replace('/', '_')}.png" for m in metrics}
    for path in figures:
        with Image.open(path) as image:
            image.verify()
    _, values = histories_via_rest(mlflow_server, parent_id, EXPERIMENT, metrics)
    assert_table_matches_histories(out, values)
    n = {(row["regime"], row["metric"], row["generation"]): row["n"] for row in table}
    assert (n[("synthetic-only", "pass_at_1", "0")], n[("synthetic-only", "pass_at_1", "2")]) == ("2", "1")
    assert n[("real-only", "pass_at_1", "2")] == "2"
