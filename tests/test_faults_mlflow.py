"""The MLflow server going away mid-run loses nothing: logging retries with backoff, gives up in
one line when the outage outlasts tracking.retry_minutes, and every metric lands once per step,
also when the server committed a batch whose answer was lost. A real ``mlflow server`` throughout."""
import json
import math
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from collapse_ray import cli
from collapse_ray.tracking import TrackingError, TrialTracker
from tests.mlflow_server import LoseOneLogBatchAnswer, MlflowServer

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path)
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def no_client_retries(monkeypatch):
    """MLflow's client retries each call itself (7 times by default); without that, the outage
    reaches collapse_ray's own retry, the code under test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def steps_per_metric(uri: str, run_id: str) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def test_a_batch_committed_whose_answer_was_lost_is_not_logged_again(server, no_client_retries, capfd):
    proxy = LoseOneLogBatchAnswer(server.port)
    tracker = TrialTracker(proxy.uri, "lost-answer", retry_minutes=1)
    run_id = tracker.start("trial", tags={})
    assert tracker.log_generation(0, {"pass_at_1": 0.25, "train/loss": 3.5}) is True
    assert tracker.log_generation(1, {"pass_at_1": 0.125, "train/loss": 3.0}) is True
    assert proxy.answers_lost == 1
    assert proxy.log_batch_calls == 2   # the retry re-read the step instead of sending it again
    assert steps_per_metric(server.uri, run_id) == {"pass_at_1": [0, 1], "train/loss": [0, 1], "generation": [0, 1]}
    assert "retrying for up to 60 s" in capfd.readouterr().err


def test_logging_gives_up_in_one_line_and_a_resumed_tracker_logs_what_is_missing(server, no_client_retries):
    tracker = TrialTracker(server.uri, "gives-up", retry_minutes=0.05)
    run_id = tracker.start("trial", tags={})
    tracker.log_generation(0, {"pass_at_1": 0.5})
    server.kill()
    started = time.monotonic()
    with pytest.raises(TrackingError) as gave_up:
        tracker.log_generation(1, {"pass_at_1": 0.25})
    assert time.monotonic() - started < 30   # 10x its 3 s of retries: it gives up, it does not hang
    message = str(gave_up.value)
    assert "\n" not in message
    assert message.startswith(f"tracking.uri: MLflow at {server.uri} did not answer for 3 s while logging generation 1")
    assert "run again to resume" in message

    server.start()
    resumed = TrialTracker(server.uri, "gives-up")
    resumed.start("trial", tags={}, run_id=run_id)
    assert resumed.log_generation(0, {"pass_at_1": 0.5}) is False
    assert resumed.log_generation(1, {"pass_at_1": 0.25}) is True
    assert steps_per_metric(server.uri, run_id) == {"pass_at_1": [0, 1], "generation": [0, 1]}


@pytest.mark.slow
def test_cli_run_rides_out_a_server_killed_and_restarted_mid_run(tmp_path, tiny_cache, server, monkeypatch, capfd):
    """``collapse-ray run`` in process, 3 generations; the server is SIGKILLed while generation 1
    runs and restarted on its port a few seconds after generation 1 tried to log."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")   # the outage outlasts MLflow's own retry
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({
        "name": "outage", "generations": 2, "output_dir": str(tmp_path / "runs"),
        "model": {"tiny": {"vocab_size": 512, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "context_length": 128, "train_minutes": 0.1, "cache_dir": tiny_cache}},
        "sizes": {"train_examples": 16, "synthetic_pool": 8, "eval_examples": 4, "max_new_tokens": 24},
        "training": {"batch_size": 8, "max_length": 128}, "generator": {"batch_size": 8},
        "tracking": {"uri": server.uri, "experiment": "outage"}}))
    gen1 = tmp_path / "runs" / "outage" / "gen_01"
    outage: dict[str, float] = {}

    def kill_then_restart():
        while not gen1.is_dir():
            time.sleep(0.2)
        server.kill()
        outage["killed"] = time.monotonic()
        while not (gen1 / "COMPLETE.json").is_file():   # generation 1 is about to log
            time.sleep(0.2)
        time.sleep(3)
        server.start()
        outage["restarted"] = time.monotonic()

    chaos = threading.Thread(target=kill_then_restart, daemon=True)
    chaos.start()
    cli.main(["run", str(config)])
    chaos.join(timeout=5)
    assert set(outage) == {"killed", "restarted"}
    err = capfd.readouterr().err
    assert "failed while logging generation 1" in err and "answers again; logging generation 1 done" in err

    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert run.info.status == "FINISHED"
    steps = steps_per_metric(server.uri, run.info.run_id)
    expected: dict[str, list[int]] = {"generation": [0, 1, 2]}
    for g in range(3):   # what each generation's record on disk says was measured
        record = json.loads((tmp_path / "runs" / "outage" / f"gen_{g:02d}" / "COMPLETE.json").read_text())
        for key, value in record["metrics"].items():
            if math.isfinite(value):
                expected.setdefault(key, []).append(g)
    assert "pass_at_1" in steps and steps == expected   # every metric once at each step it was measured
    assert [a.path for a in client.list_artifacts(run.info.run_id, "synthetic")] == [
        "synthetic/gen_00", "synthetic/gen_01", "synthetic/gen_02"]


def test_a_server_too_slow_to_start_is_killed_not_left_running(tmp_path):
    srv = MlflowServer(tmp_path)
    with pytest.raises(AssertionError):
        srv.start(timeout_s=0)   # gives up before the server can answer
    assert srv.proc.poll() is not None
