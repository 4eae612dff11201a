"""The sandbox that runs model-generated programs: correct programs pass; early exits, forged
completions and refused operations fail; HumanEval's canonical solutions pass; the API and the
config's sandbox.allow_unisolated."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from collapse_ray import sandbox
from collapse_ray.sandbox import SandboxResult, SandboxUnisolated, api, resources, run_many, run_program

FAST = dict(timeout_s=5)


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_a_correct_program_passes():
    result = run_program("assert sum([1, 2, 3]) == 6\n", **FAST)
    assert isinstance(result, SandboxResult)
    assert (result.status, result.returncode, result.passed) == ("passed", 0, True)


def test_a_failing_assertion_fails_with_its_traceback():
    result = run_program("def check(c):\n    assert c(1) == 3\ncheck(lambda x: x + 1)\n", **FAST)
    assert (result.status, result.returncode, result.passed) == ("failed", 1, False)
    assert "assert c(1) == 3" in result.stderr_tail and "AssertionError" in result.stderr_tail


def test_a_syntax_error_fails():
    assert run_program("def f(:\n", **FAST).status == "failed"


def test_the_program_may_use_the_standard_library_numpy_threads_and_subprocesses():
    result = run_program(program("""
        import dataclasses, doctest, json, logging, math, tempfile, threading, subprocess, sys
        import numpy
        assert math.isclose(numpy.arange(4).sum(), 6)
        with tempfile.TemporaryDirectory() as d:
            open(d + "/x", "w").write(json.dumps([1]))
        t = threading.Thread(target=print); t.start(); t.join()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        Point = dataclasses.make_dataclass("Point", ["x", "y"], frozen=True)
        assert Point(1, 2).y == 2
        logging.getLogger("x").warning("logging works")
        def square(x):
            '''
            >>> square(3)
            9
            '''
            return x * x
        assert doctest.testmod().failed == 0  # doctest calls sys.settrace(None)
    """), timeout_s=20)
    assert result.status == "passed", result.stderr_tail


# ---------------------------------------------------------------- early exits and forged passes

CANDIDATE_THEN_EXIT = """
def add(a, b):
    return a - b
{exit}
def check(candidate):
    assert candidate(2, 2) == 4
check(add)
"""


@pytest.mark.parametrize("exit_statement", [
    "import os; os._exit(0)",
    "import sys; sys.exit(0)",
    "raise SystemExit",
    "exit()",
    "quit()",
    "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
])
def test_exiting_before_the_tests_run_fails(exit_statement):
    result = run_program(CANDIDATE_THEN_EXIT.format(exit=exit_statement), **FAST)
    assert result.status == "failed"


def test_exiting_early_fails_even_when_the_tests_would_pass():
    source = "import os\nos._exit(0)\nassert True\n"
    result = run_program(source, **FAST)
    assert (result.status, result.returncode) == ("failed", 0)


def test_killing_the_harness_fails():
    result = run_program(program("""
        import os, signal
        for pid in (os.getppid(), 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os.killpg(0, signal.SIGKILL)
    """), **FAST)
    assert (result.status, result.returncode) == ("failed", -9)


def test_monkeypatching_assertions_and_exit_hooks_does_not_make_a_failing_test_pass():
    result = run_program(program("""
        import atexit, builtins, os, sys
        builtins.AssertionError = type("NotAnError", (Exception,), {})
        AssertionError = Exception
        sys.excepthook = lambda *args: os._exit(0)
        atexit.register(os._exit, 0)
        def check(candidate):
            assert candidate(1) == 3
        check(lambda x: x + 1)
    """), **FAST)
    assert result.status == "failed"


def test_a_trace_function_that_skips_assertions_is_refused():
    result = run_program(program("""
        import sys
        def skip_asserts(frame, event, arg):
            if event == "line" and frame.f_code.co_name == "check":
                frame.f_lineno += 1
            return skip_asserts
        sys.settrace(skip_asserts)
        def check(candidate):
            assert candidate(1) == 3
            return
        check(lambda x: x + 1)
    """), **FAST)
    assert (result.status, result.returncode) == ("failed", sandbox.EXIT_DENIED)


@pytest.mark.parametrize("forgery", [
    # raise the harness's own completion event, then leave
    "import sys, os; sys.audit('collapse_ray.sandbox.done'); os._exit(0)",
    # run the harness again on an empty program, then leave
    "import sys, os; sys._getframe(1).f_globals['run_harness'](compile('', 'x', 'exec'), {}, sys.audit);"
    " os._exit(0)",
    # write token-shaped bytes to every descriptor, then leave
    "import os\nfor fd in range(3, 256):\n"
    "    try: os.write(fd, b'0' * 32)\n"
    "    except OSError: pass\n"
    "os._exit(0)",
    # look for the token in the interpreter's objects
    "import gc; [o for o in gc.get_objects() if isinstance(o, bytes)]",
    # or in raw memory
    "import ctypes; ctypes.string_at(id(0), 64)",
    "open('/proc/self/mem', 'rb')",
    # or with native code of its own
    "import _ctypes, ctypes, os, shutil\nshutil.copy(_ctypes.__file__, 'own.so')\n"
    "ctypes.CDLL(os.path.abspath('own.so'))",
    # or swap the test's code for a function that asserts nothing
    "def check(candidate): pass\ncheck.__code__ = (lambda candidate: None).__code__",
])
def test_forging_completion_fails(forgery):
    source = forgery + "\ndef check(candidate):\n    assert candidate(1) == 3\ncheck(abs)\n"
    assert run_program(source, **FAST).status == "failed"


def test_leaving_early_while_a_forked_child_finishes_the_program_fails():
    source = "import os, time\nif os.fork() != 0:\n    os._exit(0)\ntime.sleep(0.2)\n"
    assert run_program(source, **FAST).status == "failed"


def test_the_program_cannot_add_its_own_audit_hook():
    result = run_program(program("""
        import sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(event))
        open(__file__).close()
        assert seen == []
    """), **FAST)
    assert result.status == "passed", result.stderr_tail


# ------------------------------------------------------------------------------ HumanEval

def test_every_humaneval_canonical_solution_passes_and_every_pass_body_fails():
    """The suite's one sandbox run of HumanEval: each problem's canonical solution, and a ``pass``
    body after its model prompt, in the programs the codegen task builds (completed function,
    tests, check call)."""
    from collapse_ray.data.humaneval import load_humaneval, program_for
    from collapse_ray.tasks.codegen import model_prompt

    problems = load_humaneval()
    canonical = [program_for(p, p["prompt"] + p["canonical_solution"]) for p in problems]
    empty = [program_for(p, model_prompt(p) + "\n    pass\n") for p in problems]
    results = run_many(canonical + empty)
    solved, emptied = results[:len(problems)], results[len(problems):]
    assert len(problems) == 164
    assert {p["task_id"]: r.stderr_tail[-300:] for p, r in zip(problems, solved) if not r.passed} == {}
    assert [p["task_id"] for p, r in zip(problems, emptied) if r.passed] == []
    assert {r.status for r in emptied} == {"failed"}


# A problem whose tests a function can pass without solving it when the tests are appended to it
# (HumanEval's own harness), each way below; program_for runs them apart (data/solution_harness.py).
FORGEABLE = {"task_id": "forge/0", "entry_point": "f",
             "prompt": "def helper(x):\n    return x + 1\n\n\ndef f(x):\n    \"\"\"1.5 x + 1.5\"\"\"\n",
             "test": "def check(candidate):\n    assert candidate(1) == 3\n    assert abs(candidate(2) - 4.5) < 1e-6\n"
                     "    assert helper(candidate(1)) == 4\n"}
EQUAL_TO_ANYTHING = "    def __eq__(self, other):\n        return True\n\n    def __sub__(self, other):\n        return 0.0\n\n" \
                    "    def __add__(self, other):\n        return self\n"
FORGERIES = {
    "an object equal to anything": "    class E:\n" + textwrap.indent(EQUAL_TO_ANYTHING, "    ") + "    return E()\n",
    "an int subclass equal to anything": "    class I(int):\n" + textwrap.indent(EQUAL_TO_ANYTHING, "    ")
                                         + "    return I(0)\n",
    "a metaclass hiding the class's flags": "    class M(type):\n        __flags__ = 0\n    class E(metaclass=M):\n"
                                            + textwrap.indent(EQUAL_TO_ANYTHING, "    ") + "    return E()\n",
    "abs rebound in the module": "    return 3\n\n\nabs = lambda value: 0\n",
    "abs rebound in builtins": "    return 3\n\n\nimport builtins\nbuiltins.abs = lambda value: 0\n",
}


@pytest.mark.parametrize("body", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_function_that_forges_its_tests_results_fails_which_appended_tests_would_pass(body):
    from collapse_ray.data.humaneval import program_for

    function = FORGEABLE["prompt"] + body
    appended = function + "\n\n" + FORGEABLE["test"] + "\ncheck(f)\n"   # HumanEval's own harness
    assert run_program(appended, **FAST).status == "passed"
    assert run_program(program_for(FORGEABLE, function), **FAST).status == "failed"
    solved = FORGEABLE["prompt"] + "    return 1.5 * x + 1.5\n"
    assert run_program(program_for(FORGEABLE, solved), **FAST).status == "passed"


@pytest.mark.parametrize("body, expected", [
    ("    from collections import Counter\n    return Counter(x)\n", "{'a': 2, 'b': 1}"),
    ("    from collections import namedtuple\n    return namedtuple('P', 'a b')(len(x), x[0])\n", "(3, 'a')"),
    ("    import enum\n    return enum.IntEnum('N', 'ONE TWO THREE')(len(x))\n", "3"),
    ("    return [{'k': (len(x),)}]\n", "[{'k': (3,)}]"),
])
def test_a_subclass_of_a_plain_type_is_compared_as_that_type(body, expected):
    """What a correct solution may return: a Counter is compared as its dict, a namedtuple as its tuple."""
    from collapse_ray.data.humaneval import program_for

    problem = {"task_id": "plain/0", "entry_point": "f", "prompt": "def f(x):\n    \"\"\"x is 'aab'\"\"\"\n",
               "test": f"def check(candidate):\n    assert candidate('aab') == {expected}\n"}
    result = run_program(program_for(problem, problem["prompt"] + body), **FAST)
    assert result.status == "passed", result.stderr_tail


# ------------------------------------------------------------------------------ the API

def test_run_many_keeps_the_order_of_its_inputs():
    sources = ["pass\n", "assert False\n", "while True: pass\n", "pass\n"]
    statuses = [r.status for r in run_many(sources, max_workers=2, timeout_s=1)]
    assert statuses == ["passed", "failed", "timeout", "passed"]


def test_bad_limits_are_rejected_before_anything_runs():
    with pytest.raises(ValueError):
        run_program("pass\n", timeout_s=0)
    with pytest.raises(ValueError):
        run_many(["pass\n"], memory_mb=1)
    with pytest.raises(TypeError):
        run_many(["pass\n"], bogus_limit=1)


# ------------------------------------------------------- the config's sandbox.allow_unisolated

def test_unisolated_runs_are_off_by_default_logged_and_type_checked():
    from collapse_ray.config import ConfigError, ExperimentConfig, config_from_dict
    from collapse_ray.loop import config_fingerprint

    assert ExperimentConfig().to_flat_params()["sandbox.allow_unisolated"] is False
    allowed = config_from_dict({"sandbox": {"allow_unisolated": True}})
    assert allowed.to_flat_params()["sandbox.allow_unisolated"] is True
    # Allowing it changes no result: a trial interrupted with one value resumes with the other.
    assert config_fingerprint(allowed) == config_fingerprint(ExperimentConfig())
    with pytest.raises(ConfigError, match="sandbox.allow_unisolated: expected true or false"):
        config_from_dict({"sandbox": {"allow_unisolated": "yes"}})


class RecordingGenerator:
    """Not a model: answers every prompt with a fixed body and records that it was asked."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, sampling):
        self.calls += 1
        return ["\n    return None\n"] * len(prompts)


def test_code_evaluation_refuses_before_generating_unless_unisolated_runs_are_allowed(
        monkeypatch):
    from collapse_ray.data.humaneval import load_humaneval
    from collapse_ray.generate.base import Sampling
    from collapse_ray.tasks.codegen import CodeGeneration

    monkeypatch.setattr(api, "_USE_NAMESPACES", False)  # as where no namespace can be had
    problems, generator, task = load_humaneval()[:2], RecordingGenerator(), CodeGeneration()
    with pytest.raises(SandboxUnisolated):
        task.evaluate(generator, problems, Sampling(max_new_tokens=8))
    assert generator.calls == 0
    task.allow_unisolated = True
    metrics = task.evaluate(generator, problems, Sampling(max_new_tokens=8))
    assert (generator.calls, metrics["pass_at_1"]) == (1, 0.0)


def test_a_parent_that_dies_mid_request_leaves_no_traceback_on_its_console(tmp_path):
    # SIGTERM while the evaluation threads wait on the zygote: the parent exits with the zygote's
    # reply unread, the zygote's next read fails with ECONNRESET. The zygote shares the parent's
    # stderr, the user's console: it must exit quietly.
    parent = textwrap.dedent("""
        import json, os, select, socket
        from collapse_ray.sandbox import api, launcher

        def send_and_die(self, cfg, fds):
            socket.send_fds(self.sock, [json.dumps(cfg).encode()], fds)
            select.select([self.sock], [], [], 30)   # the reply has arrived; leave it unread
            os._exit(0)

        launcher.Zygote.spawn = send_and_die
        api.run_program("import time; time.sleep(0.5)", timeout_s=5)
    """)
    # Its run directory stays behind (removed an hour later by a later process): not in /tmp.
    ended = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "TMPDIR": str(tmp_path)})
    assert ended.returncode == 0, ended.stderr
    assert ended.stderr == ""


def test_a_run_directory_left_by_a_killed_parent_is_removed_by_the_next_process(tmp_path):
    # The parent is SIGKILLed mid-run (as Ray's memory monitor kills a trial's driver): its run
    # directory stays. The next process to run a program removes it once its owner is gone and
    # it is older than any run (a live owner's, or a young one, stays).
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", program("""
        from collapse_ray.sandbox import run_program
        run_program("import time; time.sleep(30)", timeout_s=60)
    """)], env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f"{sandbox.TMP_PREFIX}{killed.pid}_*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed.kill()
    killed.wait()
    [left] = tmp_path.glob(f"{sandbox.TMP_PREFIX}{killed.pid}_*")
    young = tmp_path / f"{sandbox.TMP_PREFIX}{killed.pid}_young"
    live = tmp_path / f"{sandbox.TMP_PREFIX}{os.getpid()}_live"
    unrelated = tmp_path / f"{sandbox.TMP_PREFIX}notapid"
    for folder in (young, live, unrelated):
        folder.mkdir()
    an_hour_ago = time.time() - resources.STALE_AFTER_S - 60
    for folder in (left, live, unrelated):
        os.utime(folder, (an_hour_ago, an_hour_ago))

    subprocess.run([sys.executable, "-c", "from collapse_ray.sandbox import run_program; run_program('pass')"],
                   env=env, check=True, timeout=120)
    assert not left.exists()
    assert young.exists() and live.exists() and unrelated.exists()
