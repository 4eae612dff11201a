"""Faults inside a running grid: a process of a running trial is SIGKILLed from outside at a
seeded-random moment, and the grid still finishes with every generation logged to MLflow exactly
once and complete (checksums valid) on disk.

Each test runs a real one-trial grid (Tune trial driver, one Ray Train V2 worker group per
driver serving a job per generation, one vLLM actor per driver) on the tiny model, 2 generations;
a thread beside it finds the victim in Ray's actor table by class name and kills its pid:

    victim                        when                                   recovery
    RayTrainWorker                generation 1's job, in the train       the fit fails, so the driver does; Tune
                                  function (model not yet saved)         retries the trial at generation 1
    VLLMActor                     generation 0's generate phase, then    the driver's next call raises
                                  generation 1's evaluate phase          ActorDiedError; Tune retries, twice
    trial driver (TrialDriver)    just after a random on-disk step of    Tune retries; what the driver owned
                                  a random generation                    (vLLM actor, Train run) dies with it

Ray's state API (ray.util.state) needs the dashboard's HTTP server, which this install lacks
(no aiohttp_cors: the dashboard starts in minimal mode), so the actor table is read from the GCS
through ray._private.state, as test_grid_slow.py does.

Every random choice comes from ``COLLAPSE_RAY_FAULT_SEED`` (default 0): set it to try other moments.
Which generations ran again after a kill is read from the order of events (tests/grid_crash_hook.py
records the drivers', the saboteur notes its kills), not from clocks or file times.
"""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from collapse_ray import grid
from collapse_ray.trial_state import TrialState
from tests import grid_crash_hook
from tests.grids import assert_each_generation_logged_once, grid_args, logged_steps, tiny_grid

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

GENERATIONS = 1                                   # generations 0 and 1
TRIAL = "tiny_codegen_synthetic-only_s0_none"     # generation 1 trains on generation 0's output
POLL_S = 0.01
SEED = os.environ.get("COLLAPSE_RAY_FAULT_SEED", "0")


@pytest.fixture(scope="module")
def recording_ray():
    """One local Ray for the module; the grid runs on the Ray this process is connected to, and
    its trial drivers record their events (the crash hook, armed with no crash: Ray's workers
    inherit the environment it starts with). ``address="local"``: a plain ``ray.init()`` joins
    the cluster another process's ``ray.cluster_utils.Cluster`` (test_grid_slow.py's two-node
    test) or ``ray start`` announced."""
    import ray

    with pytest.MonkeyPatch.context() as env:
        grid_crash_hook.arm(env, "")
        ray.init(address="local")
        try:
            yield
        finally:
            ray.shutdown()


def actors(class_name: str, state: str | None = None) -> list[dict]:
    """Ray's actor table, by class name (a local class's may come qualified:
    ``closing_kept_backends.<locals>.TrialDriver``)."""
    import ray._private.state

    return [a for a in ray._private.state.actors(actor_state_name=state).values()
            if a["ActorClassName"].rsplit(".", 1)[-1] == class_name]


def actor_ids(class_name: str) -> set[str]:
    """Every actor of the class Ray has had, dead ones included (the GCS keeps their records)."""
    return {a["ActorID"] for a in actors(class_name)}


class Saboteur(threading.Thread):
    """Runs ``plan(saboteur)`` beside the grid: the plan waits for its moments (``wait_for``) and
    SIGKILLs processes (``kill``); an assertion failing in it fails the test."""

    def __init__(self, plan, trial: Path):
        super().__init__(daemon=True)
        self.plan, self.trial = plan, trial
        self.stop = threading.Event()
        self.kills: list[dict] = []
        self.error: BaseException | None = None

    def wait_for(self, condition):
        """Poll ``condition`` until it returns something truthy (returned); None if the grid ended."""
        while not self.stop.is_set():
            value = condition()
            if value:
                return value
            time.sleep(POLL_S)
        return None

    def kill(self, actor: dict, **note) -> None:
        os.kill(actor["Pid"], signal.SIGKILL)
        grid_crash_hook.note(self.trial, f"killed:{len(self.kills)}")
        self.kills.append({"class": actor["ActorClassName"], "pid": actor["Pid"], **note})

    def run(self) -> None:
        try:
            self.plan(self)
        except BaseException as e:   # raised again in the test's thread
            self.error = e

    def __enter__(self) -> "Saboteur":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(timeout=60)
        if self.error is not None:
            raise self.error


def run_grid_with(plan, tmp_path: Path, model: str, data_dir: Path, kills: int = 1) -> list[dict]:
    """Run the one-trial grid (``kills`` retries allowed) with the saboteur beside it; its kills."""
    config = tiny_grid(tmp_path, model, data_dir, generations=GENERATIONS, backend="ray",
                       regimes=("synthetic-only",), max_failures=kills)
    started = time.monotonic()
    with Saboteur(plan, tmp_path / "runs" / TRIAL) as saboteur:
        grid.main(grid_args(config))
    print(f"kills: {saboteur.kills}; grid took {time.monotonic() - started:.0f}s")
    assert len(saboteur.kills) == kills, "the grid finished before every fault was injected"
    return saboteur.kills


def gen_path(tmp_path: Path, generation: int, name: str = "") -> Path:
    return tmp_path / "runs" / TRIAL / f"gen_{generation:02d}" / name


def assert_trial_complete(tmp_path: Path) -> None:
    """Every generation logged once (MLflow) and finished on disk with valid checksums."""
    assert_each_generation_logged_once(logged_steps(f"sqlite:///{tmp_path / 'mlflow.db'}", "g"), [TRIAL],
                                       GENERATIONS)
    root = tmp_path / "runs" / TRIAL
    fingerprint = json.loads((root / "trial.json").read_text())["fingerprint"]
    assert [f.generation for f in TrialState(root, fingerprint).finished()] == list(range(GENERATIONS + 1))


def finished_after_kill(tmp_path: Path, kill: int) -> list[int]:
    """The generations the trial finished (and logged) after its ``kill``-th kill, in order."""
    events = grid_crash_hook.events(tmp_path / "runs" / TRIAL)
    after = events[events.index(f"killed:{kill}") + 1:]
    return [int(e.split(":")[1]) for e in after if e.startswith("report:")]


def tune_failures(tmp_path: Path) -> list[str]:
    """The failures Tune recorded for the trial (its error.txt holds one entry per failure)."""
    text = "".join(f.read_text() for f in (tmp_path / "runs" / "_tune").rglob("error.txt"))
    return text.split("Failure # ")[1:]


# ---------------------------------------------------------------- the faults

def test_grid_recovers_from_a_ray_train_worker_killed_mid_fit(recording_ray, tmp_path, tiny_base_model, data_dir):
    # The trial's worker group starts at generation 0 and serves generation 1's job too. That job
    # is short (the tiny model, a few steps on short synthetic texts: seconds here), so the worker
    # is killed at a random moment in the first 0.3 s after the job is sent (its texts file
    # written): while it takes the job or trains, before the model is saved.
    delay = random.Random(f"{SEED}/train").uniform(0.0, 0.3)

    def job_sent(s: Saboteur, generation: int) -> float | None:
        """When the generation's job was sent to the worker group (its texts file appeared)."""
        return s.wait_for(lambda: (gen_path(tmp_path, generation, "model.texts.json").exists()
                                   or gen_path(tmp_path, generation, "model").exists()) and time.time())

    def plan(s: Saboteur) -> None:
        saved = s.wait_for(lambda: gen_path(tmp_path, 0, "model").exists())
        sent_1 = saved and job_sent(s, 1)
        if not sent_1:
            return
        (worker,) = actors("RayTrainWorker", "ALIVE")   # the same worker as generation 0's
        time.sleep(max(0.0, sent_1 + delay - time.time()))
        assert not gen_path(tmp_path, 1, "model").exists(), f"the job saved its model within {delay:.2f}s"
        s.kill(worker, generation=1, delay=delay)

    workers_before = actor_ids("RayTrainWorker")
    (kill,) = run_grid_with(plan, tmp_path, tiny_base_model, data_dir)
    assert_trial_complete(tmp_path)
    assert finished_after_kill(tmp_path, 0) == [1]   # generation 1 redone, 0 kept
    # one group per driver, not one per generation
    assert len(actor_ids("RayTrainWorker") - workers_before) == 2
    failures = tune_failures(tmp_path)
    assert len(failures) == 1, failures
    assert "TrainGroupDied" in failures[0] and "stopped before acknowledging job 2" in failures[0], failures[0]
    assert "Training failed due to worker errors" in failures[0] and str(kill["pid"]) in failures[0], failures[0]


def test_grid_recovers_from_the_vllm_actor_killed_while_generating_and_while_evaluating(
        recording_ray, tmp_path, tiny_base_model, data_dir):
    # Generation 0: killed in its generate phase, which begins when the fit has saved the model
    # (then: fit teardown, engine load, synthesize, synthetic.jsonl written). Generation 1 (after
    # Tune's retry): killed in its evaluate phase, which begins when synthetic.jsonl is written.
    rng = random.Random(f"{SEED}/vllm")
    moments = [(0, "model", "synthetic.jsonl", "generate"), (1, "synthetic.jsonl", "COMPLETE.json", "evaluate")]

    def plan(s: Saboteur) -> None:
        for generation, start_mark, end_mark, phase in moments:
            if not s.wait_for(lambda: gen_path(tmp_path, generation, start_mark).exists()):
                return
            delay = rng.uniform(0.0, 0.2 if phase == "generate" else 0.03)
            time.sleep(delay)
            (actor,) = actors("VLLMActor", "ALIVE")
            assert not gen_path(tmp_path, generation, end_mark).exists(), f"{phase} ended within {delay:.2f}s"
            s.kill(actor, generation=generation, phase=phase, delay=delay)

    actors_before = actor_ids("VLLMActor")
    kills = run_grid_with(plan, tmp_path, tiny_base_model, data_dir, kills=2)
    assert_trial_complete(tmp_path)
    for i, kill in enumerate(kills):   # the killed generation was redone, and every later one run
        assert finished_after_kill(tmp_path, i) == list(range(kill["generation"], GENERATIONS + 1))
    failures = tune_failures(tmp_path)
    assert len(failures) == 2, failures
    for failure, where in zip(failures, [("generator.load", "task.synthesize"), ("task.evaluate",)]):
        assert "ActorDiedError" in failure and any(w in failure for w in where), failure
    assert len(actor_ids("VLLMActor") - actors_before) == 3   # each driver builds its own


def test_grid_recovers_from_its_trial_driver_killed_at_a_random_point(recording_ray, tmp_path, tiny_base_model,
                                                                      data_dir):
    rng = random.Random(f"{SEED}/driver")
    generation = rng.randrange(GENERATIONS + 1)
    mark = rng.choice(["", "model", "synthetic.jsonl", "COMPLETE.json"])   # "": the generation's start
    delay = rng.uniform(0.0, 0.5)

    def plan(s: Saboteur) -> None:
        if not s.wait_for(lambda: gen_path(tmp_path, generation, mark).exists()):
            return
        time.sleep(delay)
        (driver,) = actors("TrialDriver", "ALIVE")   # the Tune trainable (tune_runner.closing_kept_backends)
        finished = gen_path(tmp_path, generation, "COMPLETE.json").exists()
        s.kill(driver, generation=generation, after=mark or "start", delay=delay, finished=finished)

    drivers_before, boards_before = actor_ids("TrialDriver"), actor_ids("JobBoard")
    (kill,) = run_grid_with(plan, tmp_path, tiny_base_model, data_dir)
    assert_trial_complete(tmp_path)
    # The generation is kept if it had finished when the driver died, else redone.
    first_run_again = generation + 1 if kill["finished"] else generation
    assert finished_after_kill(tmp_path, 0) == list(range(first_run_again, GENERATIONS + 1))
    assert len(tune_failures(tmp_path)) == 1
    assert len(actor_ids("TrialDriver") - drivers_before) == 2
    # Both drivers' worker groups took their jobs from the launch's one board, which outlived the first.
    assert len(actor_ids("JobBoard") - boards_before) == 1
    # What the dead driver owned died with it: nothing of the trial is left running.
    assert not [a for cls in ("VLLMActor", "RayTrainWorker", "TrainController") for a in actors(cls, "ALIVE")]
