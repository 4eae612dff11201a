"""Grid configs the grid tests share: a small grid to validate and plan (no Ray), a real one on
the tiny base model (conftest's ``tiny_base_model``) to run, and what a run logged to MLflow."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml


def grid_args(config, dry_run=False, resume=False, verbose=False) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), dry_run=dry_run, resume=resume, verbose=verbose)


def write(tmp_path: Path, data: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


SMALL_GRID = {
    "name": "small",
    "base": {"generations": 2, "training": {"backend": "local"}, "generator": {"backend": "hf"}},
    "grid": {
        "models": [{"name_or_path": "Qwen/Qwen3-0.6B"}],
        "tasks": ["codegen"],
        "regimes": [{"name": "real-only"}, {"name": "hybrid", "alpha": 0.5}],
        "seeds": [0],
    },
}


def with_change(dotted: str, value) -> dict:
    data = copy.deepcopy(SMALL_GRID)
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[leaf] = value
    return data


def tiny_grid(tmp_path: Path, model: str, data_dir: Path, *, name="g", generations=2, backend="local",
              regimes=("real-only", "synthetic-only"), tracking=None, max_failures=1, mitigations=None,
              seeds=(0,)) -> Path:
    ray_backends = backend == "ray"
    functions = data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl"
    data = {
        "name": name,
        "base": {
            "task": {"name": "codegen", "data_path": str(functions)},
            "generations": generations,
            "sizes": {"train_examples": 24, "synthetic_pool": 12, "eval_examples": 6, "max_new_tokens": 24},
            "training": {"batch_size": 8, "max_length": 128, "backend": "ray" if ray_backends else "local"},
            "generator": {"backend": "vllm" if ray_backends else "hf", "batch_size": 16},
            "tracking": tracking or {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            "output_dir": str(tmp_path / "runs"),
        },
        "grid": {"models": [{"name_or_path": model, "label": "tiny",
                             "resources": {"train_workers": 1, "cpus_per_worker": 0.5}}],
                 "regimes": list(regimes), "seeds": list(seeds),
                 **({"mitigations": mitigations} if mitigations else {})},
        "resources": {"driver_cpus": 0.25 if ray_backends else 1.0, "generator_cpus": 0.25},
        "tune": {"max_failures": max_failures},
    }
    return write(tmp_path, data)


def logged_steps(uri: str, experiment: str, parent_run_id: str | None = None) -> dict[str, dict[str, list[int]]]:
    """trial run name -> metric -> the steps it was logged at (every logged point, duplicates kept),
    its status, tags and parent run. The grid launch's parent run is left out (its id, or each
    run tagged with a grid name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        if run.info.run_id == parent_run_id or "grid" in run.data.tags:
            continue
        history = {k: sorted(m.step for m in client.get_metric_history(run.info.run_id, k))
                   for k in ("generation", "train/loss", "pass_at_1")}
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        out[run.info.run_name] = {**history, "status": run.info.status, "tags": tags,
                                  "parent": run.data.tags.get("mlflow.parentRunId")}
    return out


def assert_each_generation_logged_once(runs: dict, names: list[str], generations: int) -> None:
    assert sorted(runs) == sorted(names)
    for name in names:
        for key in ("generation", "train/loss", "pass_at_1"):
            assert runs[name][key] == list(range(generations + 1)), (name, key, runs[name][key])
        assert runs[name]["status"] == "FINISHED"
