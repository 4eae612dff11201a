"""MLflow: one run per trial, params for every config choice, metrics with step = generation.

Uses ``MlflowClient`` (no fluent global state), so several trials can log from one process.
"""
from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.request
from typing import Any

# MLflow 3 refuses its plain file store unless asked; users may point tracking.uri at ./mlruns.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

GENERATION_KEY = "generation"  # logged last in each generation's batch: marks the step as done


class TrackingError(RuntimeError):
    pass


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {resp.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable: {e}") from None


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text[:6000]


class TrialTracker:
    def __init__(self, uri: str, experiment: str):
        check_reachable(uri)  # before importing mlflow: the answer comes in seconds
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
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
