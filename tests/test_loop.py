"""The recursive loop end to end, in process: tiny model built here, real HumanEval evaluation in
the sandbox, a real MLflow store."""
import json
import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from collapse_ray.loop import run_trial
from collapse_ray.tracking import GENERATION_KEY
from tests.small_trials import metric_steps, small_config

pytestmark = pytest.mark.timeout(900)


def test_two_generations_end_to_end_log_every_metric_at_every_step(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache)
    metrics = run_trial(cfg)
    assert len(metrics) == 3
    for key in ("pass_at_1", "bleu4", "train/loss", "drift/ppl_gen0_mean", "drift/ppl_gen0_corpus",
                "drift/distinct_2", "drift/parse_rate", "sys/cpu_seconds", "sys/peak_rss_mb"):
        run, steps = metric_steps(cfg, key)
        assert steps == [0, 1, 2], key
    client = MlflowClient(cfg.tracking.uri)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "synthetic")]
    assert artifacts == ["synthetic/gen_00", "synthetic/gen_01", "synthetic/gen_02"]
    histograms = [a.path for a in client.list_artifacts(run.info.run_id, "drift/gen_02")]
    assert histograms == ["drift/gen_02/ppl_gen0_histogram.json"]
    manifest = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path))
    assert "config.json" in json.loads(open(manifest).read())["base_model"]["files"]
    assert all(m["sys/cpu_seconds"] > 0 and m["sys/peak_rss_mb"] > 0 for m in metrics)
    assert run.data.params["regime.name"] == "synthetic-only"
    assert run.data.tags["task"] == "codegen" and run.info.status == "FINISHED"
    assert metrics[0]["train/share_real"] == 1.0 and "train/share_real" not in metrics[1]
    # each generation's drift is measured on the synthetic examples that generation kept
    assert all(m["drift/n_texts"] == m["synthetic/kept"] > 0 for m in metrics)


def test_rerun_of_a_finished_trial_trains_and_logs_nothing_again(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache, generations=1)
    first = run_trial(cfg)
    again = run_trial(cfg)
    assert again == first
    _, steps = metric_steps(cfg, GENERATION_KEY)
    assert steps == [0, 1]


def test_lora_with_init_from_base_trains_adapters(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache, generations=1, **{"training.method": "lora", "training.init": "base",
                                                               "regime.name": "hybrid"})
    run_trial(cfg)
    assert (tmp_path / "runs" / "loop-test" / "gen_01" / "model" / "adapter_config.json").is_file()


def test_killed_run_resumes_at_the_first_unfinished_generation(tmp_path, tiny_cache):
    """SIGKILL the real CLI while generation 1 is generating; the rerun continues there."""
    import yaml

    cfg = small_config(tmp_path, tiny_cache)
    run_trial(small_config(tmp_path / "warm", tiny_cache, generations=0))  # build the base model first
    config_file = tmp_path / "cfg.yaml"
    import dataclasses
    config_file.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    cli = [sys.executable, "-m", "collapse_ray.cli", "run", str(config_file)]
    proc = subprocess.Popen(cli, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "gen 1/2 generate ..." in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, steps = metric_steps(cfg, GENERATION_KEY)
    assert steps == [0]

    resumed = subprocess.run(cli, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "gen 0/2 started" not in resumed.stderr and "gen 1/2 started" in resumed.stderr
    run, steps = metric_steps(cfg, GENERATION_KEY)
    assert steps == [0, 1, 2]
    _, loss_steps = metric_steps(cfg, "train/loss")
    assert loss_steps == [0, 1, 2]


@pytest.mark.parametrize("task, data_file, keys", [
    ("vulnerability", "reveal/reveal_chrome.jsonl.gz", ("f1", "precision", "recall", "predicted_positive_rate",
                                                        "drift/label_positive_rate", "drift/label_agreement")),
    ("summarization", "codesearchnet/code_docstring_corpus_canonical_test.jsonl.gz",
     ("bleu4", "rougeL", "drift/ppl_gen0_mean", "drift/self_bleu")),
])
def test_each_task_runs_two_generations_on_real_data(tmp_path, tiny_cache, data_dir, task, data_file, keys):
    # No quality filter: what a barely trained model's output passes depends on how many steps its
    # base got in 0.1 min on this machine, so it could remove everything (tested in test_bad_input).
    cfg = small_config(tmp_path, tiny_cache, **{"task.name": task, "task.data_path": str(data_dir / data_file),
                                                "sizes.eval_examples": 16})
    metrics = run_trial(cfg)
    for key in (*keys, "train/loss", "synthetic/kept"):
        _, steps = metric_steps(cfg, key)
        assert steps == [0, 1, 2], key
    assert all(0.0 <= m[keys[0]] <= (1.0 if task == "vulnerability" else 100.0) for m in metrics)


def test_a_regime_with_its_own_parameters_mixes_each_generation_in_the_loop(tmp_path, tiny_cache, capsys):
    cfg = small_config(tmp_path, tiny_cache, generations=1,
                       regime={"name": "fixed-real", "real_examples": 4, "real_share": 0.5})
    metrics = run_trial(cfg)
    assert [m["train/examples"] for m in metrics] == [16.0, 8.0]   # generation 0: sizes.train_examples real
    assert [m["train/share_real"] for m in metrics] == [1.0, 0.5]
    run, _ = metric_steps(cfg, "train/examples")
    assert run.data.params["regime.real_examples"] == "4" and "regime.alpha" not in run.data.params
    assert "finished: pass_at_1=" in capsys.readouterr().err   # the task's headline metrics lead the summary


def test_embedded_benchmark_runs_two_generations_with_pass_at_1_per_family(tmp_path, tiny_cache):
    from collapse_ray.data.function_families import FAMILY_NAMES

    cfg = small_config(tmp_path, tiny_cache, **{"task.name": "codegen_embedded", "sizes.eval_examples": 28})
    metrics = run_trial(cfg)
    for key in ("pass_at_1", "bleu4", *(f"pass_at_1/{f}" for f in FAMILY_NAMES), "train/loss", "drift/parse_rate",
                "synthetic/kept"):
        _, steps = metric_steps(cfg, key)
        assert steps == [0, 1, 2], key
    assert all(0.0 <= m["pass_at_1"] <= 1.0 for m in metrics)


def test_the_generator_sleeps_while_each_generation_trains_and_then_loads_its_weights(tmp_path, tiny_cache):
    """On a GPU the vLLM engine shares the trial's GPUs with the Train workers: it must free them
    before training and take the new weights after. vLLM's sleep mode exists on CUDA only, so the
    order is recorded around the real HF generator and in-process trainer."""
    from collapse_ray.generate.hf import HFGenerator
    from collapse_ray.train.local import LocalTrainer

    calls = []

    class RecordingGenerator(HFGenerator):
        def prefetch(self, model):
            calls.append("prefetch")

        def sleep(self):
            calls.append("sleep")

        def load(self, model):
            calls.append("load")
            super().load(model)

    class RecordingTrainer(LocalTrainer):
        def train(self, init, texts, out_dir, seed, cfg=None):
            calls.append("train")
            return super().train(init, texts, out_dir, seed, cfg)

        def close(self):
            calls.append("closed")

    cfg = small_config(tmp_path, tiny_cache, generations=1)
    run_trial(cfg, trainer=RecordingTrainer(cfg.training), generator=RecordingGenerator(batch_size=8))
    # ... and a trainer passed in stays open: its owner (the grid's next trial) closes it
    assert calls == ["prefetch"] + ["sleep", "train", "load"] * 2


def test_generation_0_trains_gen0_max_steps_and_later_generations_max_steps(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache, generations=1, **{"training.max_steps": 2, "training.gen0_max_steps": 5})
    metrics = run_trial(cfg)
    assert [m["train/steps"] for m in metrics] == [5.0, 2.0]


def test_trials_differing_only_in_regime_compute_generation_0_once(tmp_path, tiny_cache):
    from collapse_ray.train.local import LocalTrainer

    class CountingTrainer(LocalTrainer):
        calls = 0

        def train(self, *args, **kwargs):
            CountingTrainer.calls += 1
            return super().train(*args, **kwargs)

    first = small_config(tmp_path, tiny_cache, name="first", generations=1)
    second = small_config(tmp_path, tiny_cache, name="second", generations=1, regime={"name": "hybrid", "alpha": 0.5})
    m_first = run_trial(first, trainer=CountingTrainer(first.training))
    m_second = run_trial(second, trainer=CountingTrainer(second.training))
    assert CountingTrainer.calls == 3   # generation 0 once, generation 1 per trial
    for key in ("pass_at_1", "bleu4", "train/loss"):
        assert m_second[0][key] == m_first[0][key], key
    assert m_first[0]["time/train_s"] > 0 and m_second[0]["time/train_s"] == 0.0   # counted where it was spent
    client = MlflowClient(second.tracking.uri)
    exp = client.get_experiment_by_name(second.tracking.experiment)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["second"].data.tags["gen0_source"] == "first" and "gen0_source" not in runs["first"].data.tags
    assert sorted(m.step for m in client.get_metric_history(runs["second"].info.run_id, "pass_at_1")) == [0, 1]
