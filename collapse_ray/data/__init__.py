"""Loaders for each task's real data."""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class DataError(ValueError):
    """A data file is missing, empty or malformed; the message names the file and the problem."""


def read_json_lines(path: str | os.PathLike, parse: Callable[[dict, str], T], *, empty: str = "no records",
                    max_records: int | None = None) -> list[T]:
    """Each non-blank line of a ``.jsonl`` (or ``.jsonl.gz``) file, parsed by ``parse(obj, where)``
    where ``where`` names the file and line for its error messages."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    records: list[T] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
                records.append(parse(raw, f"{path}: line {lineno}"))
                if max_records is not None and len(records) >= max_records:
                    break
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if not records:
        raise DataError(f"{path}: {empty}")
    return records
