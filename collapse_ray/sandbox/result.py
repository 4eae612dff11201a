"""How a run ended: the parent drains the run's pipes (`collect`) and judges the outcome
(`judge`) from the completion token and the status lines (protocol.LINE_*)."""
from __future__ import annotations

from collapse_ray.errors import SandboxError  # noqa: F401 - importable from here, as before

import json
import os
import selectors
import signal
import time
from dataclasses import dataclass

from collapse_ray.sandbox.protocol import (EXIT_DENIED, EXIT_MEMORY, LINE_MODE, LINE_REAPED,
                                           LINE_SUPERVISOR, LINE_WORKER, TOKEN_BYTES)

STDERR_TAIL_BYTES = 2048
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                  signal.SIGSYS}


class SandboxUnisolated(SandboxError):
    """No namespace could be had for the run, and unisolated execution was not allowed."""


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "crashed" | "memory"
    returncode: int | None  # the program's exit code, -N if killed by signal N, None if unknown
    stderr_tail: str  # last ~2 KB of stderr, then any note from the sandbox
    wall_s: float
    network_isolated: bool  # False: the program could reach the network (plain mode)
    isolation: str = "namespaces"  # protocol.MODE_*: "namespaces", "user-namespace", "plain"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Outcome:
    done: bytes = b""
    status: str = ""
    stderr_tail: bytes = b""
    output_bytes: int = 0
    output_exceeded: bool = False
    killed_by_parent: bool = False


def collect(supervisor: int, fds: dict[str, int], timeout_s: float, max_output: int) -> Outcome:
    """Drain the run's pipes until every writer is gone (the zygote writes last, after it has
    reaped the supervisor, which reports after everything else of the run has died). The
    supervisor enforces the deadline; the parent only aborts on too much output, or kills the
    supervisor's group if it hangs."""
    out = Outcome()
    status = bytearray()
    selector = selectors.DefaultSelector()
    for name in ("stdout", "stderr", "done", "status"):
        selector.register(fds[name + "_r"], selectors.EVENT_READ, name)
    backstop = time.monotonic() + timeout_s + 30
    open_streams = 4
    while open_streams:
        left = backstop - time.monotonic()
        if left <= 0 and not out.killed_by_parent:
            out.killed_by_parent = True
            try:  # supervisor and init: the namespace goes with init
                os.kill(-supervisor, signal.SIGKILL)
            except ProcessLookupError:
                pass
            backstop = time.monotonic() + 5
            continue
        if left <= 0:
            break
        for key, _ in selector.select(timeout=left):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fd)
                open_streams -= 1
            elif key.data in ("stdout", "stderr"):
                out.output_bytes += len(data)
                if key.data == "stderr":
                    out.stderr_tail = (out.stderr_tail + data)[-STDERR_TAIL_BYTES:]
                if out.output_bytes > max_output and not out.output_exceeded:
                    out.output_exceeded = True
                    try:
                        os.write(fds["control_w"], b"k")
                    except OSError:
                        pass
            elif key.data == "done":
                out.done = (out.done + data)[:4 * TOKEN_BYTES]
            else:
                status += data
    selector.close()
    out.status = status.decode("utf-8", "replace")
    return out


def _status_lines(text: str) -> tuple[dict, dict]:
    """The first line of each kind and the last (the ones each writer wrote after the program's
    processes were gone, even if the program could write to the pipe)."""
    first: dict = {}
    last: dict = {}
    for line in text.splitlines():
        if line[1:2] != " ":
            continue
        try:
            payload = json.loads(line[2:])
        except json.JSONDecodeError:
            continue
        if isinstance(payload, dict):
            first.setdefault(line[:1], payload)
            last[line[:1]] = payload
    return first, last


def judge(out: Outcome, token: bytes, wall_s: float, cpu_limit_s: int,
          zygote_survived: bool) -> SandboxResult:
    first, last = _status_lines(out.status)
    mode = first.get(LINE_MODE, {})
    supervisor = last.get(LINE_SUPERVISOR, {})
    worker = last.get(LINE_WORKER)
    reaped = last.get(LINE_REAPED)
    stderr = out.stderr_tail.decode("utf-8", "replace")

    def result(status: str, returncode: int | None, *notes: str) -> SandboxResult:
        text = (stderr + "\n[sandbox] " + "; ".join(notes)).lstrip("\n") if notes else stderr
        return SandboxResult(status=status, returncode=returncode, stderr_tail=text,
                             wall_s=wall_s, network_isolated=bool(supervisor["network_isolated"]),
                             isolation=supervisor["mode"])

    if mode.get("reachable") and (not zygote_survived or reaped is None or not supervisor
                                  or os.WIFSIGNALED(reaped.get("wait_status", 0))):
        # Plain mode, not root: the program runs as the supervisor's user and can signal it (or
        # the zygote). That fails the program; it must not stop the evaluation.
        supervisor = {"network_isolated": False, "mode": mode.get("mode", "plain")}
        return result("timeout" if out.killed_by_parent else "failed", None,
                      "the sandbox's supervisor was killed during the run (plain mode: the "
                      "program runs as the same user and can signal it)")
    if "refused" in supervisor:
        raise SandboxUnisolated(
            f"the sandbox cannot isolate programs here: {supervisor['refused']}, and running "
            "them unisolated was not allowed (plain mode: the program can read and write what "
            "this user can, and reach the network). Run as root, allow unprivileged user "
            "namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone), or "
            "pass allow_unisolated=True (config: sandbox.allow_unisolated: true); "
            "see docs/sandbox.md")
    if "error" in supervisor or not supervisor:
        raise SandboxError(f"the sandbox failed ({supervisor.get('error', 'no report')}): "
                           f"{stderr[-500:]}")
    if worker is not None and not worker["setup_ok"]:
        raise SandboxError(f"the sandbox could not set up the worker: {stderr[-500:]}")
    returncode = None if worker is None else worker["exit_code"]
    if out.output_exceeded:
        return result("failed", returncode,
                      f"output limit exceeded ({out.output_bytes} bytes): the run was stopped")
    if supervisor["timed_out"] or out.killed_by_parent:
        return result("timeout", returncode, "wall-clock time limit exceeded")
    if worker is None:
        raise SandboxError(f"the run ended without a report from its worker: {stderr[-500:]}")
    if out.done == token and returncode == 0:
        return result("passed", returncode)
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and
                                         worker["cpu_s"] >= cpu_limit_s):
        return result("timeout", returncode, "CPU time limit exceeded")
    if returncode == EXIT_MEMORY:
        return result("memory", returncode)
    if returncode is not None and returncode < 0 and -returncode in _CRASH_SIGNALS:
        return result("crashed", returncode, f"killed by {signal.Signals(-returncode).name}")
    if returncode == 0:
        return result("failed", returncode, "exited before the end of the program")
    if returncode == EXIT_DENIED:
        return result("failed", returncode, "refused operation, or an attempt to fake completion")
    return result("failed", returncode)
