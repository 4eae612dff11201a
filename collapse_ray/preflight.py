"""Everything a trial refuses before compute, in one function that ``validate``, ``run`` and each
grid trial call, so ``validate`` refuses exactly what ``run`` would (and the grid's pre-flight,
grid/preflight.py, runs the same checks for all its trials before any starts).

    preflight(cfg) -> TaskData
      config values   typed fields, ranges, names, shapes, URI schemes, data path kinds (config.py)
      output_dir      a directory that exists or can be created, and can be written; the trial's
                      directory, if it exists, holds this config's trial
      tracking        a local store's path can be created; an HTTP server answers and is MLflow
      model           a hub id's config can be had (cache or hub); a local directory's config reads
      data            the task's real data loads and splits: this reads it, so a bad file is named
                      with its line here, not an hour later

Imports no torch, MLflow or Ray: what it reads is files, the HF cache, and one HTTP request.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from collapse_ray.config import TINY_MODEL, ExperimentConfig, sqlite_path
from collapse_ray.errors import ModelError
from collapse_ray.trial_state import trial_dir
from collapse_ray.typed import require


def preflight(cfg: ExperimentConfig, say: Callable[[str], None] = lambda msg: None):
    """Check ``cfg`` against this machine and return its task's real data (``TaskData``)."""
    check_trial(cfg)
    say(f"reading the {cfg.task.name} task's data ({cfg.task.data_path or 'its default source'}) ...")
    return load_task_data(cfg)


def check_trial(cfg: ExperimentConfig, seen: set[str] | None = None) -> None:
    """Everything but the data. ``seen``: for a grid checking all its trials, the checks already
    passed (by what they depend on), so a tracking server or a hub model is asked once."""
    from collapse_ray.tracking import check_reachable

    def first(*depends_on) -> bool:
        key = json.dumps(depends_on, sort_keys=True, default=str)
        new = seen is None or key not in seen
        if seen is not None:
            seen.add(key)
        return new

    cfg.validate()
    check_output_dir(cfg)
    if first("tracking", cfg.tracking.uri):
        check_tracking_store(cfg.tracking.uri)
        check_reachable(cfg.tracking.uri)
    if first("model", cfg.model.name_or_path):
        check_model_available(cfg.model.name_or_path)
    if cfg.model.name_or_path == TINY_MODEL and first("tiny", cfg.model.tiny):
        check_tiny_model_cache(cfg)


def load_task_data(cfg: ExperimentConfig):
    """The task's real data, split for this seed and these sizes (``TaskData``)."""
    from collapse_ray.tasks import get_task

    return get_task(cfg.task.name, cfg.task.options).load(cfg.task.data_path, cfg.seed, cfg.sizes)


def check_output_dir(cfg: ExperimentConfig) -> None:
    from collapse_ray.loop import config_fingerprint, earlier_fingerprints
    from collapse_ray.trial_state import TrialState

    out = Path(cfg.output_dir)   # not empty: config validation's check_path_text refused that
    _writable_dir(out, "output_dir")
    trial = trial_dir(out, cfg.name)
    require(not trial.exists() or trial.is_dir(), "output_dir",
             f"{trial} (the trial's directory) is a file; move it away or choose another name")
    if trial.is_dir():
        TrialState.check_owner(trial, config_fingerprint(cfg), earlier_fingerprints(cfg))


def check_tracking_store(uri: str) -> None:
    """A local store (SQLite file, file store directory) whose path MLflow can create and write."""
    db = sqlite_path(uri)
    if db is not None:
        require(not db.is_dir(), "tracking.uri", f"{db} is a directory, not an SQLite database file")
        if db.exists():
            require(os.access(db, os.R_OK | os.W_OK), "tracking.uri", f"{db} cannot be written (permissions)")
            require(is_sqlite_file(db), "tracking.uri", f"{db} is not an SQLite database (no SQLite header); "
                                                        f"point tracking.uri at an MLflow store or a new file")
        else:
            _writable_dir(db.parent, "tracking.uri")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:"))
        _writable_dir(path, "tracking.uri")


SQLITE_HEADER = b"SQLite format 3\x00"


def is_sqlite_file(db: Path) -> bool:
    """Whether SQLite can open the file: its header, or empty (SQLite makes an empty file a new database)."""
    with open(db, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    return head in (b"", SQLITE_HEADER)


def check_model_available(name_or_path: str) -> None:
    """A hub model's config is in the HF cache or can be downloaded; a local one's config parses.
    The tiny model is built by ``run`` itself, so there is nothing to check for it here."""
    if name_or_path == TINY_MODEL:
        return
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        config = local / "config.json"
        if config.is_file():
            try:
                parsed = json.loads(config.read_text(encoding="utf-8"))
            except (ValueError, OSError) as e:
                raise ModelError(f"model.name_or_path: {config} cannot be read as JSON ({e}); "
                                 f"it is not a model saved in HF format") from None
            if not isinstance(parsed, dict):
                raise ModelError(f"model.name_or_path: {config} holds a JSON {type(parsed).__name__}, not an "
                                 f"object; it is not a model saved in HF format")
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(name_or_path, "config.json", etag_timeout=5)
    except Exception as e:  # noqa: BLE001 - offline, a typo, gated, no access: all say the same
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"model.name_or_path: cannot load {name_or_path!r} ({type(e).__name__}: {first}); "
                         f"check the id, your access, and the network (offline, only models in the HF "
                         f"cache can be used)") from None


def check_tiny_model_cache(cfg: ExperimentConfig) -> None:
    """The tiny model is built into ``model.tiny.cache_dir`` unless it is there already."""
    from collapse_ray.base_model import model_dir_for

    built = model_dir_for(cfg.model.tiny)
    if not (built / "build_info.json").is_file():
        _writable_dir(Path(cfg.model.tiny.cache_dir).expanduser(), "model.tiny.cache_dir")


def _writable_dir(path: Path, where: str) -> None:
    """``path`` is a directory that exists or can be created, and this user can write in it."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path:
        require(path.is_dir(), where, f"{path} is a file, not a directory; choose a directory")
    else:
        require(existing.is_dir(), where, f"{path} cannot be created: {existing} is a file")
    require(os.access(existing, os.W_OK | os.X_OK), where,
             f"{path} cannot be {'written' if existing == path else 'created'}: no write permission on "
             f"{existing}; choose a directory you can write")
    # The permission bits do not say all: root passes os.access everywhere, yet /proc, /sys or a
    # full or read-only disk refuse a new entry. Make one, as the run will, and take it away.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".collapse_ray-probe-", dir=existing))
    except OSError as e:
        require(False, where, f"{path} cannot be {'written' if existing == path else 'created'}: {existing} "
                              f"refuses a new entry ({e.strerror}); choose a directory you can write")

