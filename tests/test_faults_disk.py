"""The disk filling while a generation's checkpoint is written: one clear line, nothing half-written
trusted, and the generation redone once space is free. A real (small) tmpfs as output_dir."""
import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from collapse_ray.disk_full import NoSpaceLeft
from collapse_ray.loop import config_fingerprint, run_trial
from collapse_ray.trial_state import TrialState
from tests.small_trials import metric_steps, small_config

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_disk_full_during_a_checkpoint_fails_in_one_line_and_the_generation_is_redone(
        tmp_path, tiny_cache, small_disk):
    cfg = small_config(tmp_path, tiny_cache, generations=1, output_dir=str(small_disk / "runs"))
    filler = small_disk / "filler"

    def fill_disk_after_generation_0(generation, metrics, gen_dir):
        if generation == 0:   # leave too little for generation 1's model (about 150 KB)
            filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 32 * 1024))

    with pytest.raises(NoSpaceLeft) as full:
        run_trial(cfg, report=fill_disk_after_generation_0)
    gen1 = small_disk / "runs" / cfg.name / "gen_01"
    message = str(full.value)
    assert "\n" not in message
    assert message.startswith(f"output_dir: no space left on device writing {gen1} (")
    assert message.endswith("generation 1 is redone, finished ones are kept")

    state = TrialState(small_disk / "runs" / cfg.name, config_fingerprint(cfg))
    (kept,) = state.finished()   # the partial generation 1 is not trusted
    assert gen1.is_dir() and not (gen1 / "COMPLETE.json").exists()
    run, _ = metric_steps(cfg, "train/loss")
    assert MlflowClient(cfg.tracking.uri).get_run(run.info.run_id).info.status == "FAILED"

    filler.unlink()
    resumed = run_trial(cfg)
    assert len(resumed) == 2 and resumed[0] == kept.metrics   # generation 0 was not redone
    assert [d.generation for d in state.finished()] == [0, 1]
    assert sorted(p.name for p in gen1.iterdir()) == ["COMPLETE.json", "drift", "model", "synthetic.jsonl"]
    _, steps = metric_steps(cfg, "train/loss")
    assert steps == [0, 1]
