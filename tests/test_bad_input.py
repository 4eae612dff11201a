"""Bad input fails before any compute, with a message that names what is wrong."""
import gzip
import time

import pytest

from collapse_ray.config import config_from_dict
from collapse_ray.data import DataError
from collapse_ray.loop import ModelUnavailable, run_trial
from collapse_ray.tracking import TrackingError, TrialTracker


def test_unreachable_tracking_server_fails_within_seconds_naming_the_uri():
    uri = "http://127.0.0.1:9"  # discard port: nothing listens
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="http://127.0.0.1:9 is unreachable"):
        TrialTracker(uri, "x")
    assert time.monotonic() - t0 < 10


def test_malformed_data_file_fails_before_any_training(tmp_path):
    bad = tmp_path / "reveal.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"func": "int f(void) { return 0; }", "target": 0}\n{"func": broken\n')
    cfg = config_from_dict({"task": {"name": "vulnerability", "data_path": str(bad)},
                            "output_dir": str(tmp_path / "runs"),
                            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(DataError, match=r"reveal.jsonl.gz.*line 2"):
        run_trial(cfg)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_model_that_cannot_be_loaded_fails_before_training(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config_from_dict({"model": {"name_or_path": "no-such-org/no-such-model"},
                            "task": {"name": "summarization",
                                     "data_path": str(data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl")},
                            "sizes": {"train_examples": 8, "synthetic_pool": 8, "eval_examples": 8},
                            "output_dir": str(tmp_path / "runs"),
                            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(ModelUnavailable, match="model.name_or_path: cannot load 'no-such-org/no-such-model'"):
        run_trial(cfg)
    assert not list((tmp_path / "runs").rglob("gen_00"))



def test_mitigations_that_remove_every_sample_stop_the_trial_at_that_generation(tmp_path, tiny_cache):
    from collapse_ray.tasks import register_task
    from collapse_ray.tasks.codegen import CodeGeneration
    from tests.test_loop import small_config

    @register_task("codegen-that-rejects-everything")
    class RejectingCodeGeneration(CodeGeneration):
        def quality_ok(self, example):
            return False

    cfg = small_config(tmp_path, tiny_cache, **{"task.name": "codegen-that-rejects-everything",
                                                "mitigation.quality_filter": True})
    with pytest.raises(RuntimeError, match="generation 0: the mitigations removed all 8 synthetic samples"):
        run_trial(cfg)
