"""What the launch's start order (grid/estimate.py, start_order) relies on: Tune starts a
grid_search's trials in the order of its values, on a real local Ray."""
from __future__ import annotations

import time


def record_start(config: dict) -> None:
    with open(config["log"], "a") as f:
        f.write(f"{config['trial']} {time.time()}\n")


def test_tune_starts_a_grid_searchs_trials_in_the_order_of_its_values(local_ray, module_by_value, tmp_path):
    from ray import tune

    names = ["c", "a", "e", "b", "d"]
    log = tmp_path / "started.txt"
    tune.Tuner(record_start, param_space={"trial": tune.grid_search(names), "log": str(log)},
               tune_config=tune.TuneConfig(max_concurrent_trials=1),
               run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0)).fit()
    assert [line.split()[0] for line in log.read_text().splitlines()] == names
