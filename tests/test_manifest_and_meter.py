"""A trial's reproducibility manifest and its own process tree's CPU-seconds and peak memory."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from collapse_ray.manifest import build_manifest, project_git_commit
from collapse_ray.resource_meter import ProcessTreeMeter

REPO = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_hashes_data_files_and_the_models_config_and_weights(tmp_path):
    data_file = tmp_path / "train.jsonl"
    data_file.write_text('{"code": "def f(): pass"}\n')
    data_dir = tmp_path / "reveal"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "vulnerables.json").write_text("[1]")
    (data_dir / "sub" / "non-vulnerables.json").write_text("[2]")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    (model / "tokenizer.json").write_text("{}")

    manifest = build_manifest([data_file, data_dir, None], model)

    assert manifest["data_files"] == {str(p): sha256(p) for p in (
        data_file, data_dir / "sub" / "non-vulnerables.json", data_dir / "vulnerables.json")}
    assert manifest["data_paths"][-1] == "built-in"
    assert manifest["base_model"]["files"] == {"config.json": sha256(model / "config.json"),
                                               "model.safetensors": sha256(model / "model.safetensors")}
    assert manifest["packages"]["mlflow"] == importlib.metadata.version("mlflow")
    assert set(manifest["packages"]) >= {"torch", "transformers", "vllm", "ray", "deepspeed", "mlflow"}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert manifest["git_commit"] == (head or "unknown")
    assert manifest["machine"]["cpus"] == os.cpu_count()
    gpus = manifest["machine"]["gpus"]
    assert gpus["count"] == len(gpus["names"])
    assert gpus["source"] in ("torch", "nvidia-smi", "no nvidia-smi", "nvidia-smi failed")


def test_manifest_of_a_hub_id_records_the_name_only():
    assert build_manifest([], "Qwen/Qwen3-0.6B")["base_model"] == {
        "path": "Qwen/Qwen3-0.6B", "files": {}, "note": "not a local directory: not hashed"}


def test_git_commit_is_unknown_outside_a_checkout(tmp_path):
    assert project_git_commit(tmp_path) == "unknown"


def test_building_a_manifest_imports_no_heavy_package():
    code = ("import sys; from collapse_ray.manifest import build_manifest; build_manifest([], '.'); "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'ray', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


# A child that uses at least 0.5 CPU-seconds and holds 200 MB until it reads a line.
BUSY_CHILD = textwrap.dedent("""
    import sys, time
    block = bytearray(200 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1                      # touch every page: resident, not just reserved
    while time.process_time() < 0.5:
        pass
    print("holding", flush=True)
    sys.stdin.readline()
""")


def test_meter_counts_the_cpu_and_memory_of_children(monkeypatch):
    meter = ProcessTreeMeter(interval_s=0.1)
    measured = threading.Semaphore(0)   # one release per look at the tree's memory
    tree_rss = meter._tree_rss
    monkeypatch.setattr(meter, "_tree_rss", lambda: (tree_rss(), measured.release())[0])
    meter.start()
    try:
        before = meter.sample()
        child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout.readline() == "holding\n"
        while measured.acquire(blocking=False):
            pass
        # The second poll from now begins after the first ends, so after the child holds its memory;
        # the third begins after the second has recorded its peak.
        assert all(measured.acquire(timeout=60) for _ in range(3))
        child.communicate("go\n", timeout=60)
        during = meter.sample()   # the child has exited: only the poll can have seen its memory
    finally:
        meter.stop()
    assert child.returncode == 0
    assert during["sys/cpu_seconds"] >= 0.5
    assert during["sys/peak_rss_mb"] >= before["sys/peak_rss_mb"] + 150


def test_meter_reports_each_generation_separately():
    meter = ProcessTreeMeter(interval_s=0.1).start()
    try:
        subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.5: pass"], check=True)
        first = meter.sample()
        second = meter.sample()
    finally:
        meter.stop()
    assert first["sys/cpu_seconds"] >= 0.5
    assert second["sys/cpu_seconds"] < first["sys/cpu_seconds"]
