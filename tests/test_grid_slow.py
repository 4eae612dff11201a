"""Real grids on Ray Tune, on the tiny base model (slow): an MLflow tracking server, drivers
killed mid-generation and retried, a failed grid resumed, and a two-node Ray cluster."""
from __future__ import annotations

import json

import pytest

from collapse_ray import grid
from collapse_ray.errors import GridError
from tests import grid_crash_hook
from tests.grids import assert_each_generation_logged_once, grid_args, logged_steps, tiny_grid

pytestmark = pytest.mark.slow

NAMES = ["tiny_codegen_real-only_s0_none", "tiny_codegen_synthetic-only_s0_none"]


def test_two_trial_grid_logs_one_mlflow_run_per_trial_to_a_tracking_server(tmp_path, tiny_base_model, data_dir,
                                                                           mlflow_server, capsys):
    config = tiny_grid(tmp_path, tiny_base_model, data_dir, tracking={"uri": mlflow_server, "experiment": "served"})
    grid.main(grid_args(config))
    out = capsys.readouterr().out
    assert "[grid] g: 2 trials, up to 2 at once" in out and "2/2 trials finished" in out
    assert f"{NAMES[0]}: generation 2/2 done pass_at_1=" in out   # the task's headline metrics lead
    runs = logged_steps(mlflow_server, "served")
    assert_each_generation_logged_once(runs, NAMES, generations=2)
    tags = runs[NAMES[1]]["tags"]
    assert {k: v for k, v in tags.items() if k != "gen0_source"} == {
        "model": "tiny", "task": "codegen", "regime": "synthetic-only", "seed": "0", "mitigation": "none"}
    # Whichever trial got to generation 0 second took it from the first, and its run says from which.
    assert {tags.get("gen0_source"), runs[NAMES[0]]["tags"].get("gen0_source")} in ({None, NAMES[0]},
                                                                                   {None, NAMES[1]})


def test_killed_drivers_are_retried_and_resume_at_their_unfinished_generation(tmp_path, tiny_base_model, data_dir,
                                                                              monkeypatch):
    # One driver dies mid-generation 1 (model trained, generation unfinished), the other right
    # after MLflow logged generation 1 but before Tune heard of it.
    grid_crash_hook.arm(monkeypatch, f"{NAMES[0]}:1:train,{NAMES[1]}:1:report")
    grid.main(grid_args(tiny_grid(tmp_path, tiny_base_model, data_dir, max_failures=1)))
    # The generations each trial finished before and after its first driver died.
    finished = {}
    for name, died in zip(NAMES, ("died:train:1", "died:report:1")):
        events = grid_crash_hook.events(tmp_path / "runs" / name)
        cut = events.index(died)
        finished[name] = [[e for e in part if e.startswith("report:")] for part in (events[:cut], events[cut + 1:])]
    assert finished[NAMES[0]] == [["report:0"], ["report:1", "report:2"]]   # generation 1 redone, 0 kept
    assert finished[NAMES[1]] == [["report:0", "report:1"], ["report:2"]]   # generation 1 kept, 2 run after
    assert_each_generation_logged_once(logged_steps(f"sqlite:///{tmp_path / 'mlflow.db'}", "g"), NAMES, 2)


def test_resume_restores_a_grid_whose_trial_failed_and_runs_only_what_is_missing(tmp_path, tiny_base_model,
                                                                                 data_dir, monkeypatch):
    # The grid's label for exact dedup, "dedup", names the runs and is their MLflow tag (not "exact").
    names = [name.replace("_none", "_dedup") for name in NAMES]
    grid_crash_hook.arm(monkeypatch, f"{names[0]}:1:train")
    config = tiny_grid(tmp_path, tiny_base_model, data_dir, max_failures=0, mitigations={"dedup": {"dedup": "exact"}})
    with pytest.raises(GridError, match=f"1 trial\\(s\\) failed.*{names[0]}.*--resume"):
        grid.main(grid_args(config))
    runs_dir = tmp_path / "runs"
    finished_before = grid_crash_hook.events(runs_dir / names[1])
    assert "report:2" in finished_before
    assert not (runs_dir / names[0] / "gen_01" / "COMPLETE.json").exists()
    parent_file = runs_dir / "_tune" / "g" / "mlflow_parent_run.json"
    parent_id = json.loads(parent_file.read_text())["run_id"]

    grid.main(grid_args(config, resume=True))
    assert grid_crash_hook.events(runs_dir / names[1]) == finished_before   # the finished trial ran nothing again
    assert (runs_dir / names[0] / "gen_02" / "COMPLETE.json").exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = logged_steps(uri, "g", parent_id)
    assert_each_generation_logged_once(runs, names, 2)
    assert {runs[name]["tags"]["mitigation"] for name in names} == {"dedup"}
    # The resumed launch reopened its parent run, which ends FINISHED with both trials under it.
    from mlflow.tracking import MlflowClient

    assert json.loads(parent_file.read_text())["run_id"] == parent_id
    parent = MlflowClient(tracking_uri=uri).get_run(parent_id)
    assert (parent.info.status, parent.data.tags["grid"]) == ("FINISHED", "g")
    assert all(runs[name]["parent"] == parent_id for name in names)


def test_grid_on_a_two_node_cluster_with_ray_train_and_vllm(tmp_path, tiny_base_model, data_dir, capsys):
    """Two trials, each a driver + a vLLM actor in its placement group and a Ray Train worker in
    Train's own, spread over two 1-CPU nodes."""
    import ray
    import ray._private.state
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        grid.main(grid_args(tiny_grid(tmp_path, tiny_base_model, data_dir, generations=1, backend="ray")))
        out = capsys.readouterr().out
        assert "up to 2 at once" in out and "2/2 trials finished" in out
        # The nodes the trial drivers (from their Tune checkpoints), vLLM actors and Train workers
        # ran on (the GCS keeps a record of dead actors).
        nodes = {json.loads(p.read_text())["driver_node"] for p in (tmp_path / "runs" / "_tune").rglob("pointer.json")}
        actors = {}
        for actor in ray._private.state.actors().values():
            actors.setdefault(actor["ActorClassName"], set()).add(actor["Address"]["NodeID"])
        assert len(nodes) >= 1 and {"VLLMActor", "RayTrainWorker"} <= set(actors)
        assert len(nodes | actors["VLLMActor"] | actors["RayTrainWorker"]) == 2
        assert_each_generation_logged_once(logged_steps(f"sqlite:///{tmp_path / 'mlflow.db'}", "g"), NAMES, 1)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _metric_values(uri: str, experiment: str, keys=("pass_at_1", "train/loss", "synthetic/kept")) -> dict:
    """trial run name -> metric -> its values in generation order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return {run.info.run_name: {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k),
                                                           key=lambda m: m.step)] for k in keys}
            for run in client.search_runs([exp.experiment_id]) if "grid" not in run.data.tags}


def test_a_finished_trials_driver_runs_the_next_trial_on_its_worker_group_and_vllm_actor(tmp_path, tiny_base_model,
                                                                                      data_dir):
    """One trial at a time: Tune reuses the first trial's driver for the second, which takes its
    Ray Train worker group and vLLM actor (grid/kept_backends.py) and computes what a fresh
    driver computes."""
    import ray
    import ray._private.state
    import yaml

    def one_at_a_time(config):
        data = yaml.safe_load(config.read_text())
        data["tune"]["max_concurrent_trials"] = 1
        config.write_text(yaml.safe_dump(data))
        return config

    both, alone = tmp_path / "both", tmp_path / "alone"
    both.mkdir()
    alone.mkdir()
    ray.init(address="local", num_cpus=2)
    try:
        grid.main(grid_args(one_at_a_time(tiny_grid(both, tiny_base_model, data_dir, generations=1, backend="ray"))))
        started = [a["ActorClassName"].rsplit(".", 1)[-1] for a in ray._private.state.actors().values()]
        assert (started.count("RayTrainWorker"), started.count("VLLMActor")) == (1, 1)
        # Tune stopped the reused driver at the grid's end, which closed the kept worker group
        # (tune_runner.closing_kept_backends): no placement group is left reserved, Train's included.
        left = {pg: t["state"] for pg, t in ray.util.placement_group_table().items() if t["state"] != "REMOVED"}
        assert not left, left
        grid.main(grid_args(tiny_grid(alone, tiny_base_model, data_dir, generations=1, backend="ray",
                                      regimes=("synthetic-only",))))
    finally:
        ray.shutdown()
    second = (both / "runs" / "_tune").rglob(f"{NAMES[1]}.log")
    assert "from its previous trial" in next(second).read_text()
    reused = _metric_values(f"sqlite:///{both / 'mlflow.db'}", "g")
    fresh = _metric_values(f"sqlite:///{alone / 'mlflow.db'}", "g")
    assert len(reused[NAMES[1]]["pass_at_1"]) == 2 and reused[NAMES[1]] == fresh[NAMES[1]]
