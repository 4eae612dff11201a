"""What the parent and the child side of the sandbox agree on: descriptors, exit codes, audit
events and the lines of the status pipe. Standard library only (the child imports it)."""
from __future__ import annotations

# Exit codes of the worker (the program can produce them too; none of them is ever a pass).
EXIT_EXCEPTION = 1  # the program raised (including SystemExit)
EXIT_MEMORY = 86  # the program raised MemoryError (RLIMIT_AS)
EXIT_DENIED = 87  # the program tried something the guard refuses, or to forge completion
EXIT_SETUP = 88  # the sandbox could not set the worker up (reported as SandboxError)

# The harness raises these audit events around the program; the guard answers `done` with the
# completion token.
AUDIT_START = "collapse_ray.sandbox.start"
AUDIT_DONE = "collapse_ray.sandbox.done"
TOKEN_BYTES = 32
PROGRAM_NAME = "program.py"

# The supervisor's descriptors (0: /dev/null, 1 and 2: the run's stdout and stderr pipes).
FD_TOKEN, FD_DONE, FD_STATUS, FD_CONTROL = 3, 4, 5, 6

# Lines of the status pipe, "<kind> <json>\n". The parent trusts the first MODE line (written
# before any process of the program exists) and the last of each other kind.
LINE_MODE = "M"  # supervisor: {"mode": ..., "reachable": whether the program can signal it}
LINE_WORKER = "W"  # supervisor or init: how the worker ended
LINE_SUPERVISOR = "B"  # supervisor, last: its report, or {"error": ...} or {"refused": ...}
LINE_REAPED = "Z"  # zygote, after reaping the supervisor: {"wait_status": ...}

# How a run was isolated (SandboxResult.isolation).
MODE_NAMESPACES = "namespaces"  # root: mount/pid/net/ipc/uts namespaces and a per-run uid
MODE_USER_NAMESPACE = "user-namespace"  # not root: the same namespaces inside a user namespace
MODE_PLAIN = "plain"  # no namespace could be had: only with allow_unisolated
