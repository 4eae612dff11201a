"""Run untrusted, model-generated Python programs: one throwaway sandbox per program.

    result = run_program(prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n")
    result.passed  # True only if every statement of the program ran, to its end

The processes of a run (docs/sandbox.md has the full design, its modes and their limits):

    parent       api.py, any thread: leases a uid (root), makes the working directory and pipes
     ┆ zygote    child/zygote.py, one per parent process (`python -I -S`): forks a supervisor
     ┆           per run, so that no run pays for an interpreter start
     └─ supervisor  child/supervisor.py: enters new mount/pid/net/ipc/uts namespaces (as root;
        │           otherwise inside a new user namespace), enforces the wall clock, reports
        └─ init     child/init.py, pid 1 of the run: mounts (child/mounts.py), reaps, and when
           │        the worker ends kills everything left in the run
           └─ worker  child/worker.py: rlimits, then no privileges, then the program under the
                      guard (child/guard.py: the completion proof, the security core)

The modules: protocol.py (what both sides agree on), child/ (standard library only, imported by
the zygote before any run), and the parent's api.py, result.py, resources.py, launcher.py. The
API is imported lazily, so that the zygote's imports stay cheap.
"""
from __future__ import annotations

from collapse_ray.sandbox.protocol import (EXIT_DENIED, EXIT_EXCEPTION, EXIT_MEMORY,  # noqa: F401
                                           EXIT_SETUP, MODE_NAMESPACES, MODE_PLAIN,
                                           MODE_USER_NAMESPACE)

_API = {
    "run_program": "api", "run_many": "api", "check_isolation": "api",
    "SandboxResult": "result", "SandboxError": "result", "SandboxUnisolated": "result",
    "TMP_PREFIX": "resources",
}
__all__ = sorted(_API) + ["EXIT_DENIED", "EXIT_EXCEPTION", "EXIT_MEMORY", "EXIT_SETUP",
                          "MODE_NAMESPACES", "MODE_PLAIN", "MODE_USER_NAMESPACE"]


def __getattr__(name: str):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(f"collapse_ray.sandbox.{_API[name]}"), name)
    raise AttributeError(f"module 'collapse_ray.sandbox' has no attribute {name!r}")
