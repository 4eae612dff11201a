"""The hostile corpus, run as root and as an ordinary user, with the same containment asserted on
the host: files outside the run intact, no connection made, other processes alive, no secret
read, nothing left running, and the evaluation not aborted (a correct program after the corpus
still passes).

Root gets namespaces and a per-run uid; an ordinary user (`nobody`, through `setpriv`, with an
interpreter that user may execute) gets a user namespace, or, where the kernel refuses one,
a refusal unless unisolated runs are allowed."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from collapse_ray import sandbox
from tests.sandbox.hostile_corpus import CORPUS, COUNT_FORKS, FORK_BOMB, SENTINEL

REPO = Path(__file__).resolve().parents[2]
ORDINARY_USER = "nobody"
FAST = {"timeout_s": 5}

# Runs batches of programs with the sandbox and prints their results as JSON. Executed as the
# ordinary user by `python -I -c` (no site-packages: the sandbox needs the standard library only).
RUNNER = textwrap.dedent("""
    import json, sys, warnings
    request = json.load(sys.stdin)
    sys.path.insert(0, request["repo"])
    from collapse_ray.sandbox import SandboxError, api, run_many
    api._USE_NAMESPACES = request["namespaces"]
    warnings.simplefilter("ignore")
    out = []
    for batch in request["batches"]:
        try:
            results = run_many(batch["sources"], max_workers=2, **batch["limits"])
            out.append([{"status": r.status, "returncode": r.returncode, "isolation": r.isolation,
                         "stderr_tail": r.stderr_tail} for r in results])
        except SandboxError as exc:
            out.append({"error": type(exc).__name__, "message": str(exc)})
    print(json.dumps(out))
""")

class Host:
    """What the corpus attacks: world-writable files and folders, files owned by each user, a
    secret in each user's home and on a process's command line, listeners on 127.0.0.1 and on
    an abstract unix socket, and a sleeping process of each user."""

    def __init__(self, user: pwd.struct_passwd, marker: str):
        tag = uuid.uuid4().hex
        self.secret = f"collapse-ray-secret-{tag}"
        self.marker = marker
        self.folders = [Path(tempfile.mkdtemp(prefix="collapse-ray-hostile-", dir=d))
                        for d in ("/tmp", "/var/tmp", REPO)]
        self.canaries = []
        for folder in self.folders:
            folder.chmod(0o777)
            canary = folder / "canary.txt"
            canary.write_text("intact")
            canary.chmod(0o666)
            self.canaries.append(canary)
        self.owned = [self.folders[1] / "owned-by-root.txt", self.folders[1] / "owned-by-user.txt"]
        for path, uid in zip(self.owned, (0, user.pw_uid)):
            path.write_text("intact")
            os.chown(path, uid, uid)
            path.chmod(0o600)
        self.user_home = Path(tempfile.mkdtemp(prefix="collapse-ray-home-", dir="/var/tmp"))
        self.secrets = [Path.home() / f".collapse-ray-secret-{tag}", self.user_home / "secret.txt"]
        for path, uid in zip(self.secrets, (0, user.pw_uid)):
            path.write_text(self.secret)
            os.chown(path, uid, uid)
            path.chmod(0o600)
        os.chown(self.user_home, user.pw_uid, user.pw_gid)
        self.user_home.chmod(0o700)
        self.connections: list = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.abstract_name = "\0" + self.marker
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind(self.abstract_name.encode())
        self.abstract.listen()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, args=(s,), daemon=True)
                        for s in (self.tcp, self.abstract)]
        for thread in self.threads:
            thread.start()
        victim = ["sh", "-c", "sleep 600; :", self.secret]
        self.victims = [subprocess.Popen(victim),
                        subprocess.Popen(as_user(user) + victim, cwd="/")]

    def _accept(self, server: socket.socket) -> None:
        server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.connections.append(server.accept()[0])
            except OSError:
                pass

    def fields(self) -> dict:
        return {"canaries": [str(c) for c in self.canaries], "owned": [str(p) for p in self.owned],
                "folders": [str(f) for f in self.folders], "repo": str(REPO),
                "port": self.tcp.getsockname()[1], "abstract": self.abstract_name,
                "victims": [v.pid for v in self.victims], "secrets": [str(s) for s in self.secrets],
                "secret": self.secret, "marker": self.marker}

    def listings(self) -> dict:
        return {str(f): sorted(os.listdir(f)) for f in self.folders}

    def created_elsewhere(self) -> list[str]:
        """Files the corpus names with the marker, in folders others may also be writing to."""
        return [str(p) for folder in (REPO, Path("/var/tmp"))
                for p in folder.glob(f"new-{self.marker}")]

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for s in (self.tcp, self.abstract, *self.connections):
            s.close()
        for victim in self.victims:
            victim.kill()
            victim.wait()
        for path in (*self.folders, self.user_home):
            shutil.rmtree(path, ignore_errors=True)
        self.secrets[0].unlink(missing_ok=True)


def as_user(user: pwd.struct_passwd) -> list[str]:
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


@pytest.fixture(scope="module")
def ordinary_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("creating processes of another user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        return pwd.getpwnam(ORDINARY_USER)
    except KeyError:
        pytest.skip(f"no user {ORDINARY_USER!r} on this machine")


# The sandbox starts its zygote with sys.executable: the user must be able to execute that too.
CAN_RUN_ITSELF = ("import os, sys; assert sys.version_info >= (3, 10); "
                  "assert os.access(os.path.realpath(sys.executable), os.X_OK)")


@pytest.fixture(scope="module")
def user_python(ordinary_user) -> str:
    """An interpreter (CPython >= 3.10) the ordinary user may execute: this one if it can,
    else the system's (the venv here lives under root's private home)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and subprocess.run(
                as_user(ordinary_user) + [candidate, "-I", "-c", CAN_RUN_ITSELF],
                capture_output=True, cwd="/").returncode == 0:
            return candidate
    pytest.skip(f"no Python >= 3.10 that {ORDINARY_USER} may execute")


@pytest.fixture
def host(ordinary_user, marker):
    host = Host(ordinary_user, marker)
    yield host
    host.close()


def run_as(who: str, batches: list[dict], *, user=None, python=None, host=None,
           namespaces: bool = True) -> list:
    """Run batches ({"sources", "limits"}) through RUNNER as root (this interpreter) or as the
    ordinary user; the same shape of results either way. The runner's environment holds a
    secret, and the ordinary user's HOME is the host's home with a secret file in it."""
    request = {"repo": str(REPO), "namespaces": namespaces, "batches": batches}
    env = {"PATH": "/usr/bin:/bin", "SECRET_TOKEN": host.secret if host else "",
           "HOME": str(Path.home()) if who == "root" else str(host.user_home) if host else "/"}
    command = ([sys.executable] if who == "root" else as_user(user) + [python]) + ["-I", "-c", RUNNER]
    done = subprocess.run(command, cwd="/", env=env, input=json.dumps(request),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def user_namespaces_work(user, python) -> bool:
    [results] = run_as("user", [{"sources": ["pass\n"], "limits": {"allow_unisolated": True}}],
                       user=user, python=python)
    return results[0]["isolation"] == sandbox.MODE_USER_NAMESPACE


@pytest.mark.parametrize("who", ["root", "ordinary user"])
def test_the_hostile_corpus_is_contained(who, host, ordinary_user, user_python,
                                         leftover_processes):
    if who != "root" and not user_namespaces_work(ordinary_user, user_python):
        pytest.skip("this kernel refuses unprivileged user namespaces: see the refusal tests")
    fields = host.fields()
    programs = {name: "import sys\n" + textwrap.dedent(text).format(**fields)
                for name, text in CORPUS.items()}
    before = host.listings()
    corpus, bomb = run_as(
        "root" if who == "root" else "user",
        [{"sources": [*programs.values(), SENTINEL], "limits": FAST},
         {"sources": [FORK_BOMB], "limits": {"timeout_s": 10, "max_processes": 16}}],
        user=ordinary_user, python=user_python, host=host)
    expected_mode = sandbox.MODE_NAMESPACES if who == "root" else sandbox.MODE_USER_NAMESPACE
    assert isinstance(corpus, list), corpus  # no SandboxError: the evaluation went on
    assert {r["isolation"] for r in corpus} == {expected_mode}
    notes = {name: r["stderr_tail"] for name, r in zip(programs, corpus)}
    assert [name for name, text in notes.items() if "ESCAPE" in text] == [], notes
    assert corpus[-1]["status"] == "passed", corpus[-1]
    assert all(c.read_text() == "intact" for c in host.canaries + host.owned)
    assert host.listings() == before
    assert host.created_elsewhere() == []
    assert host.connections == []
    assert [v.poll() for v in host.victims] == [None, None]
    assert not any(host.secret in r["stderr_tail"] for r in corpus)
    assert leftover_processes() == []
    assert (bomb[0]["status"], "BlockingIOError" in bomb[0]["stderr_tail"]) == ("failed", True)


@pytest.mark.parametrize("who, namespaces, mode", [
    ("root", True, sandbox.MODE_NAMESPACES), ("root", False, sandbox.MODE_PLAIN),
    ("user", True, sandbox.MODE_USER_NAMESPACE)])
def test_the_process_limit_is_per_run_in_every_mode(who, namespaces, mode, ordinary_user,
                                                    user_python):
    """RLIMIT_NPROC counts a uid's processes: root's per-run uid, or (user namespace) the
    kernel's per-namespace count, keep it per run; two runs at once get 8 each, not 8 in all."""
    if mode == sandbox.MODE_USER_NAMESPACE and not user_namespaces_work(ordinary_user,
                                                                        user_python):
        pytest.skip("this kernel refuses unprivileged user namespaces")
    [results] = run_as(who, [{"sources": [COUNT_FORKS] * 2,
                              "limits": {"timeout_s": 10, "max_processes": 8,
                                         "allow_unisolated": not namespaces}}],
                       user=ordinary_user, python=user_python, namespaces=namespaces)
    assert [(r["status"], r["isolation"]) for r in results] == [("passed", mode)] * 2, results


def test_an_ordinary_user_without_namespaces_is_refused_unless_unisolated_runs_are_allowed(
        ordinary_user, user_python):
    refused, allowed = run_as("user", [{"sources": [SENTINEL], "limits": FAST},
                                       {"sources": [SENTINEL], "limits": {"allow_unisolated": True}}],
                              user=ordinary_user, python=user_python, namespaces=False)
    assert refused["error"] == "SandboxUnisolated"
    assert "allow_unisolated" in refused["message"]
    assert [(r["status"], r["isolation"]) for r in allowed] == [("passed", sandbox.MODE_PLAIN)]


@pytest.mark.parametrize("attack", [
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    # forge the supervisor's report of a broken sandbox, then kill it
    "import os\nfd = os.open(f'/proc/{os.getppid()}/fd/5', os.O_WRONLY)\n"
    "os.write(fd, b'B {\"error\": \"forged\"}\\n')\nos.kill(os.getppid(), 9)\n",
])
def test_in_plain_mode_killing_the_supervisor_fails_the_program_not_the_evaluation(
        attack, ordinary_user, user_python):
    [results] = run_as("user", [{"sources": [attack, SENTINEL],
                                 "limits": {**FAST, "allow_unisolated": True}}],
                       user=ordinary_user, python=user_python, namespaces=False)
    assert [r["status"] for r in results] == ["failed", "passed"], results
    assert "supervisor was killed" in results[0]["stderr_tail"]


def test_the_kernel_reports_a_user_namespace_for_ordinary_users_where_it_allows_one(
        ordinary_user, user_python):
    """Says which mode an ordinary user gets here, and checks it against `unshare -Ur`."""
    kernel_allows = subprocess.run(as_user(ordinary_user) + ["unshare", "-Ur", "true"],
                                   capture_output=True, cwd="/").returncode == 0
    assert user_namespaces_work(ordinary_user, user_python) == kernel_allows


@pytest.mark.parametrize("name", ["delete files outside", "write outside",
                                  "connect to loopback and host sockets", "read secrets"])
def test_without_the_sandbox_the_corpus_does_escape(name, host, ordinary_user, user_python):
    """The corpus has teeth: run directly as the ordinary user, each of these gets through."""
    source = "import sys\n" + textwrap.dedent(CORPUS[name]).format(**host.fields())
    done = subprocess.run(as_user(ordinary_user) + [user_python, "-I", "-c", source], cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": str(host.user_home),
                               "SECRET_TOKEN": host.secret},
                          capture_output=True, text=True, timeout=60)
    assert "ESCAPE" in done.stderr, done.stderr
