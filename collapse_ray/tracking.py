"""MLflow: one run per trial, params for every config choice, metrics with step = generation.

Uses ``MlflowClient`` (no fluent global state), so several trials can log from one process.
"""
from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.request
from typing import Any

from collapse_ray.errors import TrackingError  # noqa: F401 - importable from here, as before

# MLflow 3 refuses its plain file store unless asked; users may point tracking.uri at ./mlruns.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

GENERATION_KEY = "generation"  # logged last in each generation's batch: marks the step as done

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


class TrialTracker:
    def __init__(self, uri: str, experiment: str):
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

    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        """Start a new run, or reopen ``run_id`` when resuming a trial."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def logged_generations(self) -> set[int]:
        return {int(m.step) for m in self.client.get_metric_history(self.run_id, GENERATION_KEY)}

    def log_generation(self, generation: int, metrics: dict[str, float]) -> bool:
        """Log one generation's metrics at step = generation; never the same step twice.
        Returns False when the step was already logged (a resumed trial)."""
        from mlflow.entities import Metric

        if generation in self.logged_generations():
            return False
        now = int(time.time() * 1000)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        batch = [Metric(k, v, now, generation) for k, v in sorted(finite.items())]
        batch.append(Metric(GENERATION_KEY, float(generation), now, generation))
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 500])
        return True

    def log_artifact(self, local_path: str, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, local_path, artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
