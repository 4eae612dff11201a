"""Files written whole or not at all: a crash, a kill or a full disk leaves the old file or the
new one, never half of one. Every state file the project writes (trial and generation records,
synthetic data, the stdlib cache, the grid's MLflow parent run) goes through ``replacing``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write. When the block ends without an
    error the file is synced to disk and renamed over ``path``; otherwise it is removed (a full
    disk gets back what the partial file took). The temporary name holds the process id, so
    processes writing one path at once (trials filling a shared cache) never share a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)   # synced after the writer closed it: gzip's trailer included
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))
