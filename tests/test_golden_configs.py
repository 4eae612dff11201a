"""Nothing a user has breaks: every config in experiments/ keeps the fingerprint its trials resume by
and the MLflow params its runs line up on. tests/data/experiments_golden.json was computed on main
before regimes and task options became registered classes (its _about says how)."""
import json
from pathlib import Path

import pytest

from collapse_ray.config import load_config, read_yaml_mapping
from collapse_ray.loop import config_fingerprint, earlier_fingerprints
from collapse_ray.tasks import task_class
from collapse_ray.trial_state import TrialState

REPO = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((REPO / "tests" / "data" / "experiments_golden.json").read_text())["configs"]


def current_configs() -> dict:
    """Each experiments/ config by the golden file's key: a grid's trials as ``<file>::<trial>``."""
    from collapse_ray.grid import expand, load_grid

    out = {}
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        if "grid" in read_yaml_mapping(path):
            for trial in expand(load_grid(path), cwd="/golden"):
                out[f"{path.name}::{trial.name}"] = trial.config
        else:
            out[path.name] = load_config(path)
    return out


CURRENT = current_configs()


def test_every_pinned_config_still_exists():
    """Configs added since the pin are new; none of the pinned ones may disappear."""
    assert set(GOLDEN) <= set(CURRENT)


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_a_trial_saved_with_the_pinned_fingerprint_still_resumes(key, tmp_path):
    """Since the pin the base model's cache directory left the fingerprint (earlier_fingerprints);
    a trial saved then is still this config's, and takes the current fingerprint."""
    cfg = CURRENT[key]
    assert GOLDEN[key]["fingerprint"] in earlier_fingerprints(cfg)
    (tmp_path / "trial.json").write_text(json.dumps({"fingerprint": GOLDEN[key]["fingerprint"]}))
    TrialState(tmp_path, config_fingerprint(cfg), earlier_fingerprints(cfg))
    assert json.loads((tmp_path / "trial.json").read_text())["fingerprint"] == config_fingerprint(cfg)


def test_a_grids_fingerprints_do_not_depend_on_the_directory_it_is_run_from():
    from collapse_ray.grid import expand, load_grid

    grid = load_grid(REPO / "experiments" / "grid.yaml")
    here, there = expand(grid, cwd="/golden"), expand(grid, cwd="/elsewhere/clone")
    assert here[0].config.model.tiny.cache_dir != there[0].config.model.tiny.cache_dir
    assert [config_fingerprint(t.config) for t in here] == [config_fingerprint(t.config) for t in there]


# Config fields added since the pin, with their defaults (README, "Upgrading").
NEW_FIELDS = {"sandbox.allow_unisolated": False, "tracking.retry_minutes": 10.0,
              "retention.keep_models": "needed", "retention.keep_generations": [],
              "generator.weight_probe": True, "model.tiny.train_steps": None, "mitigation.execution_filter": False,
              "training.gen0_max_steps": None}
# Defaults that changed, (before, after): vLLM sizes its own KV cache on GPU; still 1 GiB on CPU.
CHANGED_DEFAULTS = {"generator.kv_cache_gb": (1.0, None)}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_mlflow_params_keep_their_names_and_values(key):
    """The documented changes only (README, "Upgrading"): ``regime.alpha`` is logged only by the
    regime that has it, and each task option is logged as ``task.options.<field>``."""
    cfg = CURRENT[key]
    old = dict(GOLDEN[key]["params"])
    if cfg.regime.name != "hybrid":  # the only regime that had a use for alpha
        old.pop("regime.alpha")
    options = task_class(cfg.task.name).Options()
    added = {f"task.options.{k}": v for k, v in vars(options).items()} | NEW_FIELDS
    new = cfg.to_flat_params()
    assert sorted(new) == sorted({**old, **added})
    for name, (before, after) in CHANGED_DEFAULTS.items():
        if old[name] == before:
            old[name] = after
    for name, value in {**old, **added}.items():
        if "${DRIVER_IP}" not in str(value):   # the grid fills in this machine's address
            assert new[name] == value, name
