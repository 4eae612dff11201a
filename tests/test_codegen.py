import pytest

from collapse_ray.data.humaneval import load_humaneval, program_for
from collapse_ray.sandbox import run_many
from collapse_ray.tasks.codegen import model_prompt, split_function

FUNCTION = 'def add(a, b):\n    """Add two numbers."""\n    return a + b\n'


def test_split_puts_the_docstring_newline_in_the_completion():
    prompt, body = split_function(FUNCTION)
    assert prompt == 'def add(a, b):\n    """Add two numbers."""'
    assert body == "\n    return a + b\n" and prompt + body == FUNCTION


@pytest.mark.parametrize("code", ["x = 1\n", "def f():\n    return 1\n", 'def f():\n    """Doc only."""\n',
                                  "def broken(:\n"])
def test_split_rejects_what_is_not_a_documented_function_with_a_body(code):
    assert split_function(code) is None


def test_humaneval_canonical_solutions_pass_and_pass_bodies_fail():
    problems = load_humaneval()
    canonical = [program_for(p, p["prompt"] + p["canonical_solution"]) for p in problems]
    empty = [program_for(p, model_prompt(p) + "\n    pass\n") for p in problems]
    results = run_many(canonical + empty)
    assert sum(r.passed for r in results[:164]) == 164
    assert sum(r.passed for r in results[164:]) == 0
