"""The sandbox's API: run whole Python programs, one throwaway sandbox per program."""
from __future__ import annotations

import os
import secrets
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from collapse_ray.cores import available_cores
from collapse_ray.sandbox import launcher, resources
from collapse_ray.sandbox.protocol import MODE_PLAIN, PROGRAM_NAME, TOKEN_BYTES
from collapse_ray.sandbox.result import SandboxResult, collect, judge

# Tests set this to exercise the plain (no namespace) mode on a machine that has namespaces.
_USE_NAMESPACES = True
_warned_unisolated = False


def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                max_processes: int = 64, max_file_mb: int = 16, max_output_kb: int = 256,
                allow_unisolated: bool = False) -> SandboxResult:
    """Run one whole Python program in a fresh sandbox and say how it ended.

    Where no namespace can be had (plain mode) this raises SandboxUnisolated, unless
    `allow_unisolated`: the program then runs with only rlimits and permissions around it."""
    _check_limits(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes,
                  max_file_mb=max_file_mb, max_output_kb=max_output_kb)
    started = time.monotonic()
    with resources.run_uid() as uid, resources.workdir() as run_dir, resources.Pipes() as pipes:
        with open(os.path.join(run_dir, PROGRAM_NAME), "w", encoding="utf-8") as f:
            f.write(source)
        token = secrets.token_hex(TOKEN_BYTES // 2).encode()
        os.write(pipes.token_w, token)
        pipes.close("token_w")
        cfg = {
            "workdir": run_dir, "uid": uid, "timeout_s": timeout_s,
            "cpu_s": max(1, int(timeout_s + 0.999)), "memory_mb": memory_mb,
            "max_processes": max_processes, "max_file_mb": max_file_mb,
            "namespaces": _USE_NAMESPACES, "allow_unisolated": bool(allow_unisolated),
            "expose": resources.interpreter_paths(run_dir), "hide": resources.hidden_paths(),
            "site_packages": resources.site_packages(), "env": resources.scrubbed_env(run_dir),
        }
        zygote, supervisor = launcher.spawn(cfg, pipes.child_ends())
        pipes.close_child_ends()
        outcome = collect(supervisor, pipes.fds, timeout_s, max_output_kb << 10)
    result = judge(outcome, token, time.monotonic() - started, cfg["cpu_s"], zygote.alive())
    if result.isolation == MODE_PLAIN:
        _warn_unisolated()
    return result


# A program's run is mostly waiting, not computing: namespaces made and torn down, hand-offs
# between zygote, supervisor, init and worker. Beside other busy processes each wait is a turn in
# the CPU queue, so the runs at once decide the wall time: the embedded test set's 256 programs
# took 30-149 s two at a time and 5-7 s eight at a time beside a 4-trial grid on 2 cores
# (docs/BENCHMARKS.md, "Sandbox concurrency").
MIN_WORKERS = 8


def run_many(sources: Sequence[str], *, max_workers: int | None = None,
             **limits) -> list[SandboxResult]:
    """`run_program` for each source, in order, at most `max_workers` at a time (default: the
    CPUs this process may use, at least MIN_WORKERS)."""
    allow_unisolated = limits.pop("allow_unisolated", False)
    _check_limits(**limits)
    limits["allow_unisolated"] = allow_unisolated
    sources = list(sources)
    workers = max(1, min(max_workers or max(MIN_WORKERS, available_cores()), len(sources) or 1))
    if workers == 1:
        return [run_program(s, **limits) for s in sources]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_program(s, **limits), sources))


def check_isolation(allow_unisolated: bool = False) -> str:
    """How programs would be isolated here (protocol.MODE_*), found by running an empty one.
    Raises SandboxUnisolated where that is plain mode and `allow_unisolated` is false, so that
    an evaluation can refuse before it computes anything."""
    return run_program("pass\n", timeout_s=10.0, allow_unisolated=allow_unisolated).isolation


def _check_limits(*, timeout_s: float = 10.0, memory_mb: int = 1024, max_processes: int = 64,
                  max_file_mb: int = 16, max_output_kb: int = 256) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be >= 64 (the interpreter needs some), got {memory_mb}")
    for name, value in (("max_processes", max_processes), ("max_file_mb", max_file_mb),
                        ("max_output_kb", max_output_kb)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _warn_unisolated() -> None:
    global _warned_unisolated
    if not _warned_unisolated:
        _warned_unisolated = True
        warnings.warn("collapse_ray.sandbox runs programs unisolated (plain mode, allowed by "
                      "allow_unisolated): see docs/sandbox.md", RuntimeWarning, stacklevel=3)
