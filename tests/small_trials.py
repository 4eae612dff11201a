"""A trial small enough to run end to end in a test (the tiny base model built from the session's
``tiny_cache``, a few examples, two generations, a local MLflow store), and what tests read back."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from collapse_ray.config import config_from_dict, set_dotted
from collapse_ray.datatypes import ModelRef


def small_config(tmp_path, tiny_cache, **overrides):
    """``overrides``: dotted keys, e.g. ``{"task.name": "codegen", "generations": 1}``."""
    data = {
        "name": "loop-test",
        "model": {"tiny": {"vocab_size": 512, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "context_length": 128, "train_minutes": 0.1, "cache_dir": tiny_cache}},
        "task": {"name": "codegen"},
        "regime": {"name": "synthetic-only"},
        "generations": 2,
        "sizes": {"train_examples": 16, "synthetic_pool": 8, "eval_examples": 4, "max_new_tokens": 24},
        "training": {"batch_size": 8, "max_length": 128},
        "generator": {"batch_size": 8},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "loop-test"},
        "output_dir": str(tmp_path / "runs"),
    }
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return config_from_dict(data)


def metric_steps(cfg, key):
    """(the trial's one MLflow run, the sorted steps ``key`` was logged at)."""
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return run, sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def finish(state, g, text="x"):
    """Generation ``g`` of a TrialState as a finished trial leaves it: a model, synthetic data, done."""
    d = state.fresh_gen_dir(g)
    (d / "model").mkdir()
    (d / "model" / "weights.bin").write_text(text)
    (d / "synthetic.jsonl").write_text("{}\n")
    state.mark_complete(g, ModelRef(str(d / "model")), {"pass_at_1": 0.5})
