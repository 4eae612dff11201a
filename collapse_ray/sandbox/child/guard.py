"""The security core: the audit hook that holds the completion token, and the harness frame.

How a pass is proved (docs/sandbox.md, "How a pass is proved"): the worker reads a random token
from a pipe only it holds, then installs `guard` (an audit hook; Python offers no way to remove
one, and this one refuses every later hook). The hook keeps the token in its closure and writes
it to the completion pipe only when `run_harness`'s own frame raises AUDIT_DONE, i.e. when `exec`
of the whole program returned normally. It also refuses the usual ways to dig the token out or
to skip statements (BLOCKED_EVENTS, trace functions, ctypes, swapping a function's code).

This file is meant to be reviewed alone: it imports only the standard library and the protocol.
"""
from __future__ import annotations

import gc
import os
import sys

from collapse_ray.sandbox.protocol import AUDIT_DONE, AUDIT_START, EXIT_DENIED, TOKEN_BYTES

# Audit events that could reveal the token held by the guard or let the program skip statements.
BLOCKED_EVENTS = frozenset({
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",  # find the guard's closure
    "sys._current_frames", "sys._current_exceptions",  # another thread's frames
    "sys.monitoring.register_callback",  # (3.12+) like sys.settrace, below
    # (sys.setprofile is allowed: a profile function cannot jump, and hooks are never profiled)
    "cpython.PyInterpreterState_New",  # a subinterpreter has no guard but shares our memory
})


def run_harness(program, namespace, audit, start=AUDIT_START, done=AUDIT_DONE):
    """The harness frame: the guard only accepts `done` from this frame, after `exec` returned."""
    audit(start)
    exec(program, namespace)
    audit(done)


def install_guard(token_fd: int, done_fd: int) -> None:
    """Install the audit hook that holds the completion token. Python offers no way to remove
    an audit hook, and this one refuses any later hook, so the program cannot take it out.

    Everything the hook uses is a local or a closure cell bound here (never a global or a
    builtin looked up at call time, which the program could replace), and it never raises
    (except the RuntimeError that CPython swallows to refuse a new hook), so no traceback can
    expose its frame."""
    token = b""
    while len(token) < TOKEN_BYTES:
        chunk = os.read(token_fd, TOKEN_BYTES)
        if not chunk:
            break
        token += chunk
    os.close(token_fd)
    write, exit_, getframe, getpid = os.write, os._exit, sys._getframe, os.getpid
    stat, getuid = os.stat, os.getuid
    gc_isenabled, gc_disable, gc_enable = gc.isenabled, gc.disable, gc.enable
    blocked, denied = BLOCKED_EVENTS, EXIT_DENIED
    start_event, done_event = AUDIT_START, AUDIT_DONE
    base_exception, runtime_error, str_type, bytes_type, type_, len_ = (
        BaseException, RuntimeError, str, bytes, type, len)
    state = [None, 0]  # the harness frame that sent `start`, and the worker's pid

    # A trace function can jump over an `assert` (by setting `frame.f_lineno`), so the program
    # may only clear tracing (doctest and others call `sys.settrace(None)` to restore it).
    clear_trace = sys.settrace

    def settrace(function):
        if function is not None:
            write(2, b"\ncollapse_ray.sandbox: refused sys.settrace\n")
            exit_(denied)
        clear_trace(None)

    sys.settrace = settrace
    settrace_code = settrace.__code__

    def own_library(name) -> bool:
        """A library the program could have written itself (native code reads memory)."""
        if name is None:
            return False
        if type_(name) is str_type:
            slash = "/"
        elif type_(name) is bytes_type:
            slash = b"/"
        else:
            return True
        if slash not in name:
            return False  # looked up in the system's library directories only
        try:
            return stat(name).st_uid == getuid()
        except base_exception:
            return False  # dlopen will fail too

    def guard(event, args):
        if event == "sys.addaudithook":
            raise runtime_error("collapse_ray.sandbox: audit hooks are reserved")
        try:
            if event == "sys.settrace" and getframe(1).f_code is not settrace_code:
                write(2, b"\ncollapse_ray.sandbox: refused sys.settrace\n")
                exit_(denied)
            if (event in blocked
                    or (event.startswith("ctypes.")
                        and (event != "ctypes.dlopen" or own_library(args[0])))
                    or (event == "object.__setattr__" and len_(args) > 1
                        and type_(args[1]) is str_type and args[1] == "__code__")):
                write(2, b"\ncollapse_ray.sandbox: refused " + event.encode() + b"\n")
                exit_(denied)
            if event == start_event or event == done_event:
                was_enabled = gc_isenabled()
                gc_disable()  # no finalizer of the program may run while this frame is live
                caller = getframe(1)
                if event == start_event:
                    if state[0] is not None:
                        exit_(denied)
                    state[0], state[1] = caller, getpid()
                else:
                    if caller is not state[0] or state[1] == 0 or getpid() != state[1]:
                        exit_(denied)
                    state[1] = 0
                    write(done_fd, token)
                if was_enabled:
                    gc_enable()
        except base_exception:
            exit_(denied)

    sys.addaudithook(guard)

