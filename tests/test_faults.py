"""Faults in the loop: a crash mid-generation loses nothing finished, and the resumed trial
computes what an uninterrupted one computes (same seed, in-process trainer and HF generator:
both deterministic on CPU; vLLM sampling is deterministic per prompt seed, see docs)."""
import pytest

from collapse_ray.loop import run_trial
from collapse_ray.train.local import LocalTrainer
from tests.small_trials import metric_steps, small_config

pytestmark = pytest.mark.timeout(900)


class CrashingTrainer(LocalTrainer):
    """The real trainer, but the process 'dies' when generation ``crash_at`` starts training."""

    def __init__(self, cfg, crash_at: int):
        super().__init__(cfg)
        self.crash_at, self.calls = crash_at, 0

    def train(self, init, texts, out_dir, seed, cfg=None):
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return super().train(init, texts, out_dir, seed)


def comparable(metrics):
    """time/, sys/ and a training job's timings (train/*_s) measure the machine, not what the trial
    computed."""
    return {k: round(v, 6) for k, v in metrics.items()
            if not k.startswith(("time/", "sys/")) and not (k.startswith("train/") and k.endswith("_s"))}


def test_resumed_trial_matches_an_uninterrupted_one(tmp_path, tiny_cache):
    straight = small_config(tmp_path / "straight", tiny_cache)
    expected = run_trial(straight)

    crashed = small_config(tmp_path / "crashed", tiny_cache)
    with pytest.raises(KeyboardInterrupt):
        run_trial(crashed, trainer=CrashingTrainer(crashed.training, crash_at=2))
    resumed = run_trial(crashed)

    assert [comparable(m) for m in resumed] == [comparable(m) for m in expected]
    _, steps = metric_steps(crashed, "train/loss")
    assert steps == [0, 1, 2]
