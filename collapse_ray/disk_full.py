"""A full disk under output_dir, reported in one line instead of a library's traceback.

Writers report it in their own ways: ``OSError(ENOSPC)`` from Python, a Rust ``StorageFull`` from
safetensors, text inside a Ray worker's error. Whatever was half-written stays unrecorded (no
COMPLETE.json), so a rerun redoes that generation.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from collapse_ray.errors import TrialError

_MARKERS = ("No space left on device", "StorageFull", "Disk quota exceeded")


class NoSpaceLeft(TrialError):
    """The disk under output_dir filled while a generation was being written."""


def as_no_space_left(exc: BaseException, path: Path, generation: int) -> NoSpaceLeft | None:
    """The one-line error for ``exc`` when it (or what caused it) is a full disk, else None."""
    seen: BaseException | None = exc
    while seen is not None and not type(seen).__module__.startswith("mlflow"):   # MLflow's disk is not ours
        full = isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or any(m in str(seen) for m in _MARKERS):
            try:
                free = f"{shutil.disk_usage(path).free / 2**20:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            return NoSpaceLeft(
                f"output_dir: no space left on device writing {path} ({free}); free space or choose "
                f"another output_dir, then run again: generation {generation} is redone, finished ones are kept")
        seen = seen.__cause__ or seen.__context__
    return None
