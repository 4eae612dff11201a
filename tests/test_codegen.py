"""The codegen task's function splitting and options. Its HumanEval programs run in the sandbox
in tests/sandbox/test_sandbox_proof.py."""
import pytest

from collapse_ray.tasks.codegen import split_function

FUNCTION = 'def add(a, b):\n    """Add two numbers."""\n    return a + b\n'


def test_split_puts_the_docstring_newline_in_the_completion():
    prompt, body = split_function(FUNCTION)
    assert prompt == 'def add(a, b):\n    """Add two numbers."""'
    assert body == "\n    return a + b\n" and prompt + body == FUNCTION


@pytest.mark.parametrize("code", ["x = 1\n", "def f():\n    return 1\n", 'def f():\n    """Doc only."""\n',
                                  "def broken(:\n"])
def test_split_rejects_what_is_not_a_documented_function_with_a_body(code):
    assert split_function(code) is None


def test_the_function_length_limit_is_a_task_option(tmp_path):
    import json
    from types import SimpleNamespace

    from collapse_ray.data import DataError
    from collapse_ray.tasks import get_task

    long_body = "".join(f"    x{i} = a + {i}\n" for i in range(20))
    functions = [FUNCTION.replace("add", f"add{i}") for i in range(2)]
    functions += [f'def long{i}(a):\n    """Long."""\n{long_body}    return a\n' for i in range(2)]
    path = tmp_path / "functions.jsonl"
    path.write_text("".join(json.dumps({"code": code, "docstring": "Doc.", "func_name": f"f{i}"}) + "\n"
                            for i, code in enumerate(functions)))
    sizes = SimpleNamespace(train_examples=2, synthetic_pool=2, eval_examples=1)
    data = get_task("codegen").load(str(path), seed=0, sizes=sizes)
    assert len(data.train) + len(data.pool) == 4
    with pytest.raises(DataError, match="only 2 usable functions"):
        get_task("codegen", {"max_function_chars": 100}).load(str(path), seed=0, sizes=sizes)
