"""Ray stays at the edge: only the grid's Tune runner, the Ray trainer and the vLLM actor import
it. Everything else, `collapse-ray validate`, `collapse-ray grid --dry-run` and `collapse-ray run`
with in-process backends work where `import ray` fails (a sitecustomize puts None in
sys.modules["ray"], which makes Python treat Ray as not installed)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The Tune runner, the Ray trainer with its worker group, its TorchTrainer and worker side, the vLLM actor.
RAY_EDGE = {"collapse_ray.grid.tune_runner", "collapse_ray.train.worker_group", "collapse_ray.train.lean_trainer",
            "collapse_ray.train.ray_worker", "collapse_ray.generate.vllm_actor", "collapse_ray.ray_here"}


@pytest.fixture
def no_ray(tmp_path):
    """Run ``python ARGS`` in a subprocess that cannot import Ray; returns the CompletedProcess."""
    blocker = tmp_path / "no_ray"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    return run


def ray_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import Ray, at the top or inside a function."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        lines += [node.lineno for name in names if name == "ray" or name.startswith("ray.")]
    return lines


def test_only_the_ray_edge_modules_import_ray_anywhere():
    package = REPO / "collapse_ray"
    found = {".".join(p.relative_to(REPO).with_suffix("").parts): ray_imports(p) for p in package.rglob("*.py")}
    assert {module for module, lines in found.items() if lines} == RAY_EDGE


def test_every_module_off_the_ray_edge_imports_without_ray(no_ray):
    script = """
import importlib, json, pkgutil
import collapse_ray
failed = {}
for m in pkgutil.walk_packages(collapse_ray.__path__, "collapse_ray."):
    try:
        importlib.import_module(m.name)
    except ImportError as e:
        failed[m.name] = str(e)
print(json.dumps(failed))
"""
    proc = no_ray("-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout)
    assert set(failed) <= RAY_EDGE, failed
    # The blocker works: the modules that import Ray at the top fail here.
    assert {"collapse_ray.grid.tune_runner", "collapse_ray.generate.vllm_actor"} <= set(failed)
    assert all("ray" in message for message in failed.values()), failed


@pytest.mark.parametrize("command", [
    ["validate", "experiments/smoke.yaml"],
    ["grid", "experiments/grid_smoke.yaml", "--dry-run"],
    ["grid", "experiments/paper.yaml", "--dry-run"],
])
def test_validate_and_grid_dry_run_need_no_ray(no_ray, command):
    proc = no_ray("-m", "collapse_ray.cli", *command)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert ("valid" if command[0] == "validate" else "max_concurrent_trials =") in proc.stdout


@pytest.mark.slow   # ~35 CPU-seconds: a base model build and one generation
def test_a_run_with_in_process_backends_needs_no_ray(no_ray, tmp_path, tiny_cache):
    config = {
        "name": "no-ray",
        "model": {"tiny": {"vocab_size": 512, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "context_length": 128, "train_minutes": 0.1, "cache_dir": tiny_cache}},
        "generations": 0,
        "sizes": {"train_examples": 8, "synthetic_pool": 4, "eval_examples": 2, "max_new_tokens": 16},
        "training": {"batch_size": 8, "max_length": 128, "backend": "local"},
        "generator": {"backend": "hf", "batch_size": 8},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "no-ray"},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = no_ray("-m", "collapse_ray.cli", "run", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "trial no-ray: 1 generations finished" in proc.stdout
