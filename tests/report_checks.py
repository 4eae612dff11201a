"""Checks of `collapse-ray report` against MLflow: the REST API read directly (not through the
code under test), the report run as a user runs it, and its table compared with the histories."""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def rest(uri: str, endpoint: str, query: dict | None = None, body: dict | None = None) -> dict:
    url = f"{uri}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def histories_via_rest(uri: str, parent_id: str, experiment: str,
                       metrics: tuple[str, ...]) -> tuple[list[dict], dict]:
    """(the experiment's runs, values[(regime, metric, generation)] -> list over the seeds of
    ``parent_id``'s children), from the REST API alone."""
    exp_id = rest(uri, "experiments/get-by-name", {"experiment_name": experiment})["experiment"]["experiment_id"]
    runs = rest(uri, "runs/search", body={"experiment_ids": [exp_id], "max_results": 100})["runs"]
    children = [r for r in runs if {"key": "mlflow.parentRunId", "value": parent_id} in r["data"].get("tags", [])]
    values = defaultdict(list)
    for run in children:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        for metric in metrics:
            history = rest(uri, "metrics/get-history", {"run_id": run["info"]["run_id"], "metric_key": metric})
            for point in history["metrics"]:
                values[(tags["regime"], metric, int(point.get("step", 0)))].append(point["value"])
    return runs, values


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def fmt(x: float) -> str:
    return f"{x:.4g}"


def assert_table_matches_histories(out: Path, values: dict) -> None:
    """Every row of the report's table.csv (and its cell in table.md) is the mean / sd / n / change
    of ``values`` (histories_via_rest) at that regime, metric and generation."""
    table, table_md = read_csv(out / "table.csv"), (out / "table.md").read_text()
    assert table
    for row in table:
        seeds = values[(row["regime"], row["metric"], int(row["generation"]))]
        gen0 = statistics.mean(values[(row["regime"], row["metric"], 0)])
        assert int(row["n"]) == len(seeds)
        assert float(row["mean"]) == pytest.approx(statistics.mean(seeds), rel=1e-12)
        assert float(row["change"]) == pytest.approx(statistics.mean(seeds) - gen0, abs=1e-12)
        if gen0 == 0:
            assert row["rel_change"] in ("", "nan")
        else:
            assert float(row["rel_change"]) == pytest.approx((statistics.mean(seeds) - gen0) / abs(gen0))
        if len(seeds) > 1:
            assert float(row["sd"]) == pytest.approx(statistics.stdev(seeds), rel=1e-12)
            assert f"{fmt(statistics.mean(seeds))} ± {fmt(statistics.stdev(seeds))} (n={len(seeds)}" in table_md
        else:
            assert row["sd"] in ("", "nan") and f"{fmt(seeds[0])} (n=1" in table_md


def run_report(uri: str, experiment: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collapse_ray.cli", "report", experiment, "--tracking-uri", uri,
                           "--out", str(out), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
