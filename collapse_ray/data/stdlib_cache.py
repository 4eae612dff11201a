"""The standard library's documented functions, extracted once per interpreter and cached on disk.

Extraction parses ~2,000 files (5 s on a quiet core, 40 s under load) and was paid by every trial
and again by the base-model build. The cache key covers what the records depend on: this
interpreter's standard library (every file's path, size and mtime), the extractor's source, and
the record format; anything else changing rebuilds it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from pathlib import Path

from collapse_ray import python_source
from collapse_ray.atomic_io import replacing
from collapse_ray.data import codesearchnet

CACHE_ENV = "COLLAPSE_RAY_CACHE_DIR"


def cache_dir() -> Path:
    """Absolute, so Ray trials (which run in directories of their own) share it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "collapse_ray").expanduser().resolve()


def stdlib_function_records() -> list[dict]:
    """Every documented standard-library function as a CodeSearchNet record (a fresh list)."""
    return [dict(r) for r in _records(_cache_key(), cache_dir())]


@functools.lru_cache(maxsize=2)
def _records(key: str, directory: Path) -> tuple[dict, ...]:
    path = directory / f"stdlib_functions-{key}.jsonl.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return tuple(json.loads(line) for line in f)
    except (OSError, EOFError, ValueError):   # missing, or a crash left it half-written
        pass
    records = tuple(codesearchnet.extract_functions(codesearchnet.stdlib_roots(), repo_name="python-stdlib"))
    _write_atomic(path, records)
    return records


def _cache_key() -> str:
    h = hashlib.sha256(Path(codesearchnet.__file__).read_bytes())
    h.update(Path(python_source.__file__).read_bytes())   # the extractor's parse
    for root in codesearchnet.stdlib_roots():
        h.update(str(root).encode())
        for file in codesearchnet._python_files(root, codesearchnet.SKIP_DIRS):
            st = file.stat()
            h.update(f"{file.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _write_atomic(path: Path, records) -> None:
    try:
        with replacing(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    except OSError:   # a read-only home: extraction still works, only uncached
        pass
