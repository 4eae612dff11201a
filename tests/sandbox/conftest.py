"""Fixtures of the sandbox tests: every test leaves the machine as it was, and the root modes."""
from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from collapse_ray.sandbox import api, resources, run_program


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
    if not run_program("pass\n", timeout_s=5).network_isolated:
        pytest.skip("namespaces are not available here")
    return {}


@pytest.fixture
def leftover_processes(marker):
    """The processes still running with the test's marker on their command line."""
    return lambda: processes_matching(set(), marker)
