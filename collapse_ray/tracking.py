"""MLflow: one parent run per grid launch, one nested run per trial, params for every config
choice, metrics with step = generation, a reproducibility manifest per trial.

Uses ``MlflowClient`` (no fluent global state), so several trials can log from one process.
"""
from __future__ import annotations

import base64
import datetime
import json
import math
import os
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from collapse_ray.atomic_io import write_json_atomic
from collapse_ray.errors import TrackingError  # noqa: F401 - importable from here, as before
from collapse_ray.tracking_retry import Retrier

# MLflow 3 refuses its plain file store unless asked; users may point tracking.uri at ./mlruns.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

GENERATION_KEY = "generation"  # logged last in each generation's batch: marks the step as done
PARENT_RUN_TAG = "mlflow.parentRunId"   # MLflow's own tag: the UI nests a run under its parent
# Tags of a grid's parent run.
GRID_NAME_TAG, LAUNCH_ID_TAG, LAUNCH_TIME_TAG, GIT_COMMIT_TAG = "grid", "launch_id", "launch_time", "git_commit"
BATCH_METRICS = 500            # MLflow's limit per log_batch call

PROBE_PATH = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=collapse-ray-probe"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when an HTTP tracking URI is not an MLflow server that
    answers: nothing listening, access refused, or a web server that is not MLflow."""
    if not uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(uri.rstrip("/") + PROBE_PATH, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            status, kind, body = resp.status, resp.headers.get_content_type(), resp.read(65536)
    except urllib.error.HTTPError as e:   # MLflow answers a missing experiment with 404 + JSON
        status, kind, body = e.code, e.headers.get_content_type(), e.read(65536)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"tracking.uri: MLflow tracking server {uri} is unreachable ({reason}); start it "
                            f"(mlflow server --host HOST --port PORT) or correct the host and port") from None
    if status in (401, 403):
        raise TrackingError(f"tracking.uri: MLflow tracking server {uri} refused access (HTTP {status}); set "
                            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    if not _is_mlflow_answer(body):
        raise TrackingError(f"tracking.uri: {uri} answers HTTP but is not an MLflow server (GET "
                            f"{PROBE_PATH.split('?')[0]} gave HTTP {status}, {kind}); point tracking.uri at "
                            f"the address of `mlflow server`")


def _is_mlflow_answer(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and ("experiment" in answer or "error_code" in answer)


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's own client would send (its environment variables)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text[:6000]


class _RunLogger:
    """An MLflow client bound to one experiment and (once started) one run."""

    def __init__(self, uri: str, experiment: str, retry_minutes: float = 10.0):
        check_reachable(uri)  # before importing mlflow: the answer comes in seconds
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        except (MlflowException, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise TrackingError(f"tracking.uri: the MLflow store {uri} cannot be used ({first}); "
                                f"check the URI, or choose another store") from None
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise TrackingError(f"tracking.experiment: {experiment!r} is deleted in {uri}; restore it "
                                f"(mlflow experiments restore) or choose another name")
        self.run_id: str | None = None
        self.retry = Retrier(uri, retry_minutes * 60)   # mid-run calls only: a launch fails fast

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        # An upload to the same path replaces the file: safe to repeat.
        self.retry.call(f"uploading {artifact_path}",
                        lambda: self.client.log_artifact(self.run_id, local_path, artifact_path=artifact_path))

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self.retry.call(f"uploading {artifact_path or local_dir}",
                        lambda: self.client.log_artifacts(self.run_id, local_dir, artifact_path=artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ended. A run ending in failure tries once: the failure that brought it
        here (an outage included) matters more than its status, which the next launch resets."""
        if self.run_id is None or (status != "FINISHED" and self.retry.gave_up):
            return
        if status == "FINISHED":
            self.retry.call("marking the run finished", lambda: self.client.set_terminated(self.run_id, status=status))
            return
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:   # noqa: BLE001 - reported, never masks the error being raised
            self.retry.say(f"tracking: could not mark MLflow run {self.run_id} {status} ({str(e).splitlines()[0][:200]})")


class TrialTracker(_RunLogger):
    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None,
              parent_run_id: str | None = None) -> str:
        """Start a new run (nested under ``parent_run_id``, a grid's run), or reopen ``run_id``
        when resuming a trial."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            if parent_run_id:   # a resumed trial belongs to the launch that resumed it
                self.client.set_tag(run_id, PARENT_RUN_TAG, parent_run_id)
            self.run_id = run_id
        else:
            tags = {**tags, **({PARENT_RUN_TAG: parent_run_id} if parent_run_id else {})}
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        return self.run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        self.retry.call("tagging the run", lambda: [self.client.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def logged_generations(self) -> set[int]:
        return {int(m.step) for m in self.client.get_metric_history(self.run_id, GENERATION_KEY)}

    def log_generation(self, generation: int, metrics: dict[str, float]) -> bool:
        """Log one generation's metrics at step = generation, each exactly once, through a server
        outage too. Returns False when the step was already logged (a resumed trial).

        Idempotent: each attempt first re-reads what the server holds, because a batch the server
        committed may have lost its answer on the way back."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        batch = [Metric(k, v, now, generation) for k, v in sorted(finite.items())]
        batch.append(Metric(GENERATION_KEY, float(generation), now, generation))
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            if generation in self.logged_generations():
                return attempts > 1   # this call's earlier attempt committed it
            todo = batch
            if attempts > 1 or len(batch) > BATCH_METRICS:   # part of it may be there already
                there = self._keys_logged_at(generation, [m.key for m in batch])
                todo = [m for m in batch if m.key not in there]
            for i in range(0, len(todo), BATCH_METRICS):   # GENERATION_KEY goes last: the done-marker
                self.client.log_batch(self.run_id, metrics=todo[i:i + BATCH_METRICS])
            return True

        return self.retry.call(f"logging generation {generation}", attempt)

    def _keys_logged_at(self, step: int, keys: list[str]) -> set[str]:
        return {k for k in keys if any(m.step == step for m in self.client.get_metric_history(self.run_id, k))}

    def log_manifest(self, data_paths, model_dir: str) -> dict:
        """``manifest.json``: package versions, git commit, data and model hashes, the machine."""
        from collapse_ray.manifest import build_manifest

        manifest = build_manifest(data_paths, model_dir)
        self.client.log_dict(self.run_id, manifest, "manifest.json")
        return manifest


class GridRunTracker(_RunLogger):
    """The parent run of one grid launch. Its id is kept in the grid's state directory, so a
    resumed grid reopens the same run and its trials stay nested under it."""

    STATE_FILE = "mlflow_parent_run.json"

    def start(self, grid_name: str, config: dict, state_dir: str | os.PathLike) -> str:
        from collapse_ray.config import _flatten
        from collapse_ray.manifest import project_git_commit

        state_file = Path(state_dir) / self.STATE_FILE
        reopened = self._reopen(state_file, grid_name)
        if reopened:
            self.run_id = reopened
            return self.run_id
        launch_id = uuid.uuid4().hex
        tags = {GRID_NAME_TAG: grid_name, LAUNCH_ID_TAG: launch_id, GIT_COMMIT_TAG: project_git_commit(),
                LAUNCH_TIME_TAG: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        self.run_id = self.client.create_run(self.experiment_id, run_name=grid_name, tags=tags).info.run_id
        self.log_params(_flatten(config))
        write_json_atomic(state_file, {"run_id": self.run_id, LAUNCH_ID_TAG: launch_id, GRID_NAME_TAG: grid_name})
        return self.run_id

    def _reopen(self, state_file: Path, grid_name: str) -> str | None:
        """The stored run, if this tracking store still holds it for this grid and experiment."""
        from mlflow.exceptions import MlflowException

        if not state_file.is_file():
            return None
        stored = json.loads(state_file.read_text())
        try:
            run = self.client.get_run(stored["run_id"])
        except MlflowException:   # another tracking store than the first launch used
            return None
        tags = run.data.tags
        if (run.info.experiment_id != self.experiment_id or tags.get(GRID_NAME_TAG) != grid_name
                or tags.get(LAUNCH_ID_TAG) != stored.get(LAUNCH_ID_TAG)):
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
