"""Nothing a user has breaks: for every config in experiments/ (each grid trial included), the
config fingerprint (which lets an interrupted trial resume) and the MLflow param names (which line
new runs up with old ones) are those recorded in tests/golden/experiment_fingerprints.json, written
by the code of commit 707c66a. A change that must alter them needs a migration and a README note."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from collapse_ray import grid
from collapse_ray.config import load_config
from collapse_ray.loop import config_fingerprint

REPO = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((REPO / "tests" / "golden" / "experiment_fingerprints.json").read_text())


def experiment_configs():
    """(key, ExperimentConfig) for every config in experiments/; grid trials resolved from /golden."""
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        if "grid" in yaml.safe_load(path.read_text()):
            for trial in grid.expand(grid.load_grid(path), cwd="/golden"):
                yield f"{path.name}/{trial.name}", trial.config
        else:
            yield path.name, load_config(path)


def test_fingerprints_and_param_names_of_every_experiment_config_are_unchanged():
    configs = dict(experiment_configs())
    assert {key: config_fingerprint(cfg) for key, cfg in configs.items()} == GOLDEN["fingerprints"]
    for key, cfg in configs.items():
        assert sorted(cfg.to_flat_params()) == GOLDEN["param_names"], key
