"""The benchmark scripts start (their --help), and the grids `make grid` and `make study` run
plan without Ray: every trial validates, the trial counts and the shared sizes are the documented ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collapse_ray.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "common.py")
EMBEDDED_SIZES = "train_examples=2000 synthetic_pool=256 eval_examples=256 max_new_tokens=64 max_steps=500"


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_script_prints_its_help(script):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


@pytest.mark.parametrize("config, trials, at_once", [
    ("grid.yaml", "9 trials = 1 models x 3 tasks x 3 regimes x 1 seeds x 1 mitigations", 2),
    ("study.yaml", "45 trials = 1 models x 3 tasks x 5 regimes x 3 seeds x 1 mitigations", 2),
    ("study_mitigations.yaml", "18 trials = 1 models x 3 tasks x 1 regimes x 3 seeds x 2 mitigations", 3)])
def test_make_grid_and_make_study_configs_pass_the_dry_run(config, trials, at_once, capsys):
    import ray

    cli(["grid", str(REPO / "experiments" / config), "--dry-run"])
    out = capsys.readouterr().out
    assert f"grid {config[:-5]}: {trials}" in out
    assert f"max_concurrent_trials = {at_once}" in out
    assert "trials at once would take" not in out   # the schedule finds no idle cores worth a trial more
    assert not ray.is_initialized()


def test_grid_and_study_share_the_embedded_sizes():
    from collapse_ray.grid import expand, load_grid

    sizes = set()
    for config in ("grid.yaml", "study.yaml", "study_mitigations.yaml"):
        for t in expand(load_grid(REPO / "experiments" / config)):
            s, tr = t.config.sizes, t.config.training
            sizes.add(f"train_examples={s.train_examples} synthetic_pool={s.synthetic_pool} eval_examples="
                      f"{s.eval_examples} max_new_tokens={s.max_new_tokens} max_steps={tr.max_steps}")
    assert sizes == {EMBEDDED_SIZES}


def test_the_study_parts_are_the_study_s_own_trials():
    """`make study` resumes what the parts ran: a part's trial has the name and fingerprint the
    full study gives it (generations and generator settings are not part of a trial's identity)."""
    from collapse_ray.grid import expand, load_grid
    from collapse_ray.loop import config_fingerprint

    def trials(*configs):
        return {t.name: t.config for c in configs for t in expand(load_grid(REPO / "experiments" / c), cwd="/s")}

    full = trials("study.yaml", "study_mitigations.yaml", "study_execution_filter.yaml")
    parts = trials("study_codegen.yaml", "study_codegen_mitigations.yaml", "study_vulnerability.yaml",
                   "study_summarization.yaml")
    assert len(parts) == 36   # 12 + the quality filter, dedup and execution filter x 3 seeds + vulnerability x 2 and summarization x 3 regimes x 3 seeds
    for name, cfg in parts.items():
        assert config_fingerprint(cfg) == config_fingerprint(full[name]), name
        assert (cfg.output_dir, cfg.tracking.experiment) == (full[name].output_dir, full[name].tracking.experiment)
    small = trials("study_codegen_small.yaml")
    assert {c.model.tiny.hidden_size for c in small.values()} == {64}
    assert {c.model.tiny.train_steps for c in [*small.values(), *parts.values()]} == {500}
    # Claim (b) from a matched generation 0: the same smaller model, generation 0 three times longer,
    # under its own label (part 3's trials and generation 0 stay theirs).
    from collapse_ray.grid.estimate import generation0_key_of

    matched = trials("study_codegen_small_matched.yaml")
    assert not set(matched) & set(small) and len(matched) == 12
    assert {(c.model.tiny.hidden_size, c.training.gen0_max_steps, c.training.max_steps)
            for c in matched.values()} == {(64, 1500, 500), (64, 1000, 500)}
    assert not {generation0_key_of(c) for c in matched.values()} & {generation0_key_of(c) for c in small.values()}


def test_the_orchestration_bench_cut_to_all_tasks_is_make_grid_s_trials(tmp_path):
    """`orchestration.py --task all --trials 3 --generations 3` compares `make grid`'s own nine
    trials: same names and fingerprints; only where they write differs."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from orchestration import small_grid
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from collapse_ray.grid import expand, load_grid
    from collapse_ray.loop import config_fingerprint

    def trials(path):
        return {t.name: config_fingerprint(t.config) for t in expand(load_grid(path), cwd="/s")}

    grid = REPO / "experiments" / "grid.yaml"
    assert trials(small_grid(str(grid), "all", 3, 3, None, tmp_path)) == trials(grid)
    one_task = trials(small_grid(str(grid), "codegen_embedded", 2, 3, None, tmp_path))
    assert len(one_task) == 2 and set(one_task.items()) < set(trials(grid).items())


def test_gpu_mfu_benchmark_runs_both_methods_on_a_small_shape_without_a_gpu(tmp_path):
    out = tmp_path / "mfu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_training_mfu.py"), "--shape", "tiny",
                          "--device", "cpu", "--seq-len", "16", "--batch", "2", "--steps", "2", "--warmup", "1",
                          "--peak-tflops", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"full", "lora"}
    full, lora = rows["full"], rows["lora"]
    assert full["trainable"] == full["parameters"] and 0 < lora["trainable"] < lora["parameters"]
    for r in rows.values():
        assert r["tokens_per_s"] == pytest.approx(2 * 16 / r["step_s"])
        factor = 6 if r["method"] == "full" else 4
        assert r["mfu"] == pytest.approx(factor * r["parameters"] * r["tokens_per_s"] / 1e12)   # peak 1 TFLOP/s
