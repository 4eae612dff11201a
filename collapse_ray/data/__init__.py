"""Loaders for each task's real data, and the one reader of their files.

A data file is UTF-8 text, gzip-compressed or not: compression is told from the file's first
bytes, not its name. Every problem is a ``DataError`` naming the file and, where there is one,
the line.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from collapse_ray.errors import DataError  # noqa: F401 - importable from here, as before

T = TypeVar("T")

GZIP_MAGIC = b"\x1f\x8b"
# Formats a data file is sometimes mistaken for: named, so the message says what to do.
OTHER_FORMATS = {b"BZh": "bzip2-compressed", b"\xfd7zXZ\x00": "xz-compressed", b"(\xb5/\xfd": "zstd-compressed",
                 b"PK\x03\x04": "zip archive", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16",
                 b"\x89PNG": "PNG image", b"%PDF": "PDF"}
UTF8_BOM = b"\xef\xbb\xbf"


MAX_LINE_BYTES = 64 << 20   # a record is a function and its label or docstring: kilobytes


def text_lines(path: str | os.PathLike, max_line_bytes: int | None = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each line of a UTF-8 text file, gzip-compressed or not; a line
    over ``max_line_bytes`` is a DataError (None: no limit, for a file that is one JSON document)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "file does not exist"
        raise DataError(f"{path}: {what}; give a data file (.jsonl or .jsonl.gz)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    compressed = head.startswith(GZIP_MAGIC)
    for magic, kind in OTHER_FORMATS.items():
        if head.startswith(magic):
            raise DataError(f"{path}: is a {kind} file, not UTF-8 text; convert it to UTF-8 text "
                            f"(JSON lines), optionally gzip-compressed")
    lineno = 0
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            # readline with a limit: a line is held whole in memory, and a gzip of a few kB can
            # unpack to one line of gigabytes
            limit = -1 if max_line_bytes is None else max_line_bytes + 1
            for lineno, raw in enumerate(iter(lambda: f.readline(limit), b""), 1):
                if max_line_bytes is not None and len(raw) > max_line_bytes:
                    raise DataError(f"{path}: line {lineno} is over {max_line_bytes >> 20} MiB (no line break within "
                                    f"it); each line must be one record")
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: line {lineno}, byte {e.start + 1}: {raw[e.start:e.start + 4]!r} is not UTF-8 "
                        f"({'inside gzip data' if compressed else 'not gzip either'}); data files must be "
                        f"UTF-8 text, optionally gzip-compressed") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: {'gzip data is corrupt or truncated' if compressed else 'cannot be read'} "
                        f"after line {lineno} ({e}); {'recompress' if compressed else 'check'} the file") from None


def read_text(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 text file (gzip-compressed or not), with ``text_lines``' errors; one
    JSON document may be written on one line of any length (ReVeal's arrays)."""
    return "".join(line for _, line in text_lines(path, max_line_bytes=None))


def read_json_lines(path: str | os.PathLike, parse: Callable[[dict, str], T], *, empty: str = "no records",
                    max_records: int | None = None) -> list[T]:
    """Each non-blank line of a JSON-lines file (gzip-compressed or not), parsed by
    ``parse(obj, where)`` where ``where`` names the file and line for its error messages."""
    records: list[T] = []
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg}, column {e.colno}); "
                            f"each line must be one JSON object") from None
        records.append(parse(raw, f"{path}: line {lineno}"))
        if max_records is not None and len(records) >= max_records:
            break
    if not records:
        raise DataError(f"{path}: {empty}")
    return records
