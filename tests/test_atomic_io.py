"""The one atomic-write helper every state file goes through."""
from __future__ import annotations

import gzip
import json

import pytest

from collapse_ray.atomic_io import replacing, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(OSError, match="disk full"):
        with replacing(path) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise OSError("disk full")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_compressed_file_is_whole_and_the_parent_is_created(tmp_path):
    path = tmp_path / "cache" / "rows.jsonl.gz"
    with replacing(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n')
    assert gzip.open(path, "rt").read() == '{"a": 1}\n'
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl.gz"]
