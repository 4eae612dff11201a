"""A second launch on the same trial directory (or grid state) is refused; a killed launch's lock
never blocks the next one."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from collapse_ray.launch_lock import LOCK_NAME, LaunchLocked, launch_lock
from collapse_ray.loop import run_trial
from tests.small_trials import small_config

REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\n"
        "from collapse_ray.launch_lock import launch_lock\n"
        "with launch_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n")


def hold_in_child(directory: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_launch_is_refused_naming_the_holder(tmp_path):
    with launch_lock(tmp_path / "trial"):
        with pytest.raises(LaunchLocked) as refused:
            with launch_lock(tmp_path / "trial"):
                pass
    message = str(refused.value)
    assert message.startswith(f"output_dir: {tmp_path / 'trial'} is in use by another launch (pid {os.getpid()} "
                              f"on {socket.gethostname()}, started ")
    assert "\n" not in message
    with launch_lock(tmp_path / "trial"):   # released when the first launch ended
        pass


def test_the_lock_of_a_sigkilled_launch_does_not_block_the_next(tmp_path):
    child = hold_in_child(tmp_path / "grid-state")
    with pytest.raises(LaunchLocked, match=f"pid {child.pid} "):
        with launch_lock(tmp_path / "grid-state", where="grid state"):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert str(child.pid) in (tmp_path / "grid-state" / LOCK_NAME).read_text()   # stale text is left behind
    with launch_lock(tmp_path / "grid-state", where="grid state"):
        assert f'"pid": {os.getpid()}' in (tmp_path / "grid-state" / LOCK_NAME).read_text()


def test_run_trial_is_refused_while_another_launch_holds_its_directory(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache, generations=0)
    child = hold_in_child(Path(cfg.output_dir) / cfg.name)
    try:
        with pytest.raises(LaunchLocked, match=f"in use by another launch \\(pid {child.pid} "):
            run_trial(cfg)
        assert not (Path(cfg.output_dir) / cfg.name / "trial.json").exists()   # refused before touching state
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_run_killed_mid_trial_leaves_no_lock_behind(tmp_path, tiny_cache):
    """A real ``collapse-ray run`` holds the trial; a second launch is refused; after SIGKILL the
    next launch resumes and finishes."""
    cfg = small_config(tmp_path, tiny_cache, generations=1)
    config_path = tmp_path / "trial.yaml"
    config_path.write_text(yaml.safe_dump({
        "name": cfg.name, "generations": 1, "output_dir": cfg.output_dir,
        "model": {"tiny": {"vocab_size": 512, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "context_length": 128, "train_minutes": 0.1, "cache_dir": tiny_cache}},
        "sizes": {"train_examples": 16, "synthetic_pool": 8, "eval_examples": 4, "max_new_tokens": 24},
        "training": {"batch_size": 8, "max_length": 128}, "generator": {"batch_size": 8},
        "tracking": {"uri": cfg.tracking.uri, "experiment": cfg.tracking.experiment}}))
    first = subprocess.Popen([sys.executable, "-m", "collapse_ray.cli", "run", str(config_path)],
                             env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = Path(cfg.output_dir) / cfg.name / LOCK_NAME
    try:
        deadline = time.monotonic() + 600
        while not (lock.is_file() and f'"pid": {first.pid}' in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        with pytest.raises(LaunchLocked, match=f"pid {first.pid} "):
            run_trial(cfg)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert len(run_trial(cfg)) == 2
