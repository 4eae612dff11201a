"""A trial's durable state on disk, so a rerun continues at the first unfinished generation.

    <output_dir>/<trial>/trial.json           config fingerprint, MLflow run id
    <output_dir>/<trial>/gen_03/model/         full weights or LoRA adapter
    <output_dir>/<trial>/gen_03/synthetic.jsonl
    <output_dir>/<trial>/gen_03/COMPLETE.json  metrics + checksums, written last and atomically

A generation counts as finished only when COMPLETE.json exists and every checksum in it still
matches; a partial or corrupt generation is deleted and redone, never silently loaded. A model
pruned by retention is listed in its record's "pruned" and left out of its checksums, so a
pruned generation still counts as finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.atomic_io import write_json_atomic
from collapse_ray.datatypes import ModelRef
from collapse_ray.errors import ConfigError

MODEL_DIR = "model"   # a generation's model (full weights or adapter), the only thing pruned

# Files larger than this are checked by size only: hashing tens of GB on every resume costs minutes.
HASH_LIMIT_BYTES = 256 * 2**20


def _fingerprint_file(path: Path) -> str:
    size = path.stat().st_size
    if size > HASH_LIMIT_BYTES:
        return f"size:{size}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(root: Path, pruned: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file's fingerprint but the record's own and those under pruned top-level dirs
    (leftovers of a prune cut short are ignored, then removed by the next prune)."""
    return {str(p.relative_to(root)): _fingerprint_file(p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "COMPLETE.json" and p.relative_to(root).parts[0] not in pruned}


@dataclass(frozen=True)
class FinishedGeneration:
    generation: int
    model: ModelRef
    synthetic_path: Path
    metrics: dict[str, float]
    model_pruned: bool = False   # retention removed the model; ``model`` names where it was


def trial_dir(output_dir: str | os.PathLike, trial_name: str) -> Path:
    """Where a trial keeps its state: ``<output_dir>/<trial>``."""
    return Path(output_dir) / trial_name


class TrialState:
    def __init__(self, root: str | os.PathLike, fingerprint: str, earlier: tuple[str, ...] = ()):
        """``earlier``: fingerprints an earlier version gave the same config; a trial saved with
        one of them is this config's and takes ``fingerprint``."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._meta_path = self.root / "trial.json"
        meta = self.check_owner(self.root, fingerprint, earlier)
        self._meta = {**meta, "fingerprint": fingerprint}
        write_json_atomic(self._meta_path, self._meta)

    @classmethod
    def read(cls, root: str | os.PathLike) -> "TrialState":
        """A trial's state as it is on disk, read only: nothing is created or written, and no
        fingerprint is checked (a directory that holds no trial, or an unreadable trial.json, which
        check_owner refuses, reads as one with nothing recorded)."""
        state = cls.__new__(cls)
        state.root = Path(root)
        state._meta_path = state.root / "trial.json"
        state._meta = _json_object(state._meta_path) or {}
        return state

    def is_finished(self, generations: int) -> bool:
        """Whether generations 0..``generations`` are all finished (and intact)."""
        return len(self.finished()) > generations

    @staticmethod
    def check_owner(root: Path, fingerprint: str, earlier: tuple[str, ...] = ()) -> dict:
        """The trial's saved metadata; a ConfigError when ``root`` holds another config's trial
        (one saved with neither ``fingerprint`` nor one of the ``earlier``)."""
        path = Path(root) / "trial.json"
        try:
            meta = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot be read ({e}); delete {root} to start that trial over") from None
        if not isinstance(meta, dict) or meta.get("fingerprint", fingerprint) not in (fingerprint, *earlier):
            raise ConfigError(
                f"{root} holds a trial run with a different config; choose another "
                f"output_dir or experiment name, or delete that directory to start over")
        return meta

    @property
    def mlflow_run_id(self) -> str | None:
        return self._meta.get("mlflow_run_id")

    def set_mlflow_run_id(self, run_id: str) -> None:
        self._meta["mlflow_run_id"] = run_id
        write_json_atomic(self._meta_path, self._meta)

    def gen_dir(self, generation: int) -> Path:
        return self.root / f"gen_{generation:02d}"

    def fresh_gen_dir(self, generation: int) -> Path:
        """An empty directory for a generation about to run (leftovers of a crash removed)."""
        d = self.gen_dir(generation)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def mark_complete(self, generation: int, model: ModelRef, metrics: dict[str, float]) -> None:
        d = self.gen_dir(generation)
        record = {
            "generation": generation,
            "model": {"path": _relative(model.path, self.root), "adapter": _relative(model.adapter, self.root)},
            "metrics": metrics,
            "checksums": file_checksums(d),
        }
        write_json_atomic(d / "COMPLETE.json", record)

    def prune_model(self, generation: int) -> bool:
        """Remove a finished generation's model directory, recording it first so that a crash
        mid-way leaves a valid record. Returns whether space was freed."""
        d = self.gen_dir(generation)
        try:
            record = json.loads((d / "COMPLETE.json").read_text())
        except (OSError, json.JSONDecodeError):
            return False   # unfinished: nothing is pruned from a generation resume would redo
        if MODEL_DIR not in record.get("pruned", ()):
            record["pruned"] = sorted({*record.get("pruned", ()), MODEL_DIR})
            record["checksums"] = {k: v for k, v in record["checksums"].items()
                                   if Path(k).parts[0] != MODEL_DIR}
            write_json_atomic(d / "COMPLETE.json", record)
        if not (d / MODEL_DIR).exists():
            return False
        shutil.rmtree(d / MODEL_DIR)
        return True

    def finished(self) -> list[FinishedGeneration]:
        """Finished generations 0..k-1, stopping at the first one that is missing or corrupt."""
        out = []
        g = 0
        while True:
            record = self._load_valid(g)
            if record is None:
                return out
            model = record["model"]
            out.append(FinishedGeneration(
                generation=g,
                model=ModelRef(_absolute(model["path"], self.root), _absolute(model["adapter"], self.root)),
                synthetic_path=self.gen_dir(g) / "synthetic.jsonl",
                metrics=record["metrics"],
                model_pruned=MODEL_DIR in record.get("pruned", ())))
            g += 1

    def _load_valid(self, generation: int) -> dict | None:
        d = self.gen_dir(generation)
        record = _json_object(d / "COMPLETE.json")
        model = record.get("model") if record is not None else None
        if not (isinstance(model, dict) and isinstance(model.get("path"), str)
                and isinstance(model.get("adapter"), (str, type(None))) and isinstance(record.get("metrics"), dict)):
            return None
        try:
            if file_checksums(d, tuple(record.get("pruned", ()))) != record.get("checksums"):
                return None
        except (OSError, TypeError):
            return None
        return record


def _json_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None where it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):   # ValueError: bad JSON or bytes that are not UTF-8
        return None
    return data if isinstance(data, dict) else None


def _relative(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return "@trial/" + str(p.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _absolute(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    return str(root / path[len("@trial/"):]) if path.startswith("@trial/") else path
