"""The console: library noise and process output go to log files, the progress lines stay; the
grid's lines for a retried and a failed trial."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collapse_ray.grid.console import GridConsole, error_summary, trial_log

REPO = Path(__file__).resolve().parents[1]


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, without the quieting variables an earlier test's
    quiet_libraries() may have left in this process's environment."""
    from collapse_ray.console import QUIET_ENV

    inherited = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**inherited, "PYTHONPATH": str(REPO), **env})


def test_output_to_sends_every_writer_to_the_log_and_keeps_a_stream_to_the_console(tmp_path):
    log = tmp_path / "logs" / "grid.log"
    result = python(f"""
        import os, subprocess, sys
        from collapse_ray.console import output_to
        with output_to({str(log)!r}) as console:
            print("a python print")
            sys.stderr.write("python's stderr\\n")
            os.write(2, b"a write to descriptor 2\\n")   # as C++ libraries and raylet warnings do
            subprocess.run(["sh", "-c", "echo a child process"])
            console.write("[grid] a progress line\\n")
        print("after the block")
    """)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("[grid] a progress line\nafter the block\n", "")
    assert log.read_text().splitlines() == ["a python print", "python's stderr", "a write to descriptor 2",
                                            "a child process"]


def test_quiet_libraries_hides_progress_bars_and_info_lines_that_show_without_it():
    result = python("""
        import logging, sys
        from transformers.utils import logging as hf_logging

        def noise():
            for _ in hf_logging.tqdm(range(3), desc="Loading weights"):   # transformers' own bar
                pass
            hf_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
            logging.getLogger("mlflow.tracking").info("an MLflow INFO line")
            logging.getLogger("vllm.engine").info("a vLLM INFO line")
            # DeepSpeed's own detection, as transformers' save_pretrained runs it on a machine
            # without a GPU (it caches its answer: forget it, so that it detects, and warns, again)
            from deepspeed.accelerator import real_accelerator
            real_accelerator.ds_accelerator = None
            real_accelerator.get_accelerator()

        logging.basicConfig(level=logging.INFO)   # as a library that configures logging would
        noise()
        print("==== quiet", file=sys.stderr, flush=True)
        print("==== quiet", flush=True)
        from collapse_ray.console import quiet_libraries
        quiet_libraries()
        noise()
    """, CUDA_VISIBLE_DEVICES="")   # DeepSpeed's detection then finds no GPU on any machine
    assert result.returncode == 0, result.stderr
    loud, quiet = result.stderr.split("==== quiet")
    loud += result.stdout.split("==== quiet")[0]   # DeepSpeed's handler writes to stdout
    quiet += result.stdout.split("==== quiet")[-1]
    for line in ("Loading weights", "a transformers warning", "an MLflow INFO line", "a vLLM INFO line",
                 "Setting accelerator to CPU"):
        assert line in loud and line not in quiet, (line, quiet)


ACTOR_DIED = """Failure # 1 (occurred at 2026-01-01_00-00-00)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tpid: 4242
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR
"""
# An error file holds every failure of the trial (a retried one, an earlier launch's) in order.
TRACEBACK = ACTOR_DIED + """Failure # 2 (occurred at 2026-01-01_00-00-00)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=4242, ip=10.0.0.1, actor_id=abc, repr=trial_driver)
  File "/repo/collapse_ray/loop.py", line 140, in _run_locked
    trained = trainer.train(init, texts, out, seed=seed)
  File "/repo/tests/grid_crash_hook.py", line 60, in at
    raise RuntimeError(f"{INJECTED}: this trial always fails at generation {generation}")
RuntimeError: injected failure: this trial always fails at generation 1
"""


@pytest.mark.parametrize("text, line", [
    (TRACEBACK, "RuntimeError: injected failure: this trial always fails at generation 1"),
    (ACTOR_DIED, "The actor died unexpectedly before finishing this task."),
    (TRACEBACK + ACTOR_DIED.replace("# 1", "# 3"), "The actor died unexpectedly before finishing this task."),
    (None, "no error recorded"),
])
def test_a_failure_is_summed_up_in_one_line(text, line):
    assert error_summary(text) == line


def test_grid_console_prints_one_line_per_event_with_the_trial_log_for_a_real_failure(tmp_path):
    from collapse_ray import grid
    from tests.grids import SMALL_GRID, write

    trials = grid.expand(grid.load_grid(write(tmp_path, SMALL_GRID)))
    name = trials[0].name
    stream = io.StringIO()
    console = GridConsole(trials, tmp_path / "state", stream, max_failures=1)
    console.trial_started(name)
    console.generation_done(name, {"generation": 0, "pass_at_1": 0.25, "bleu4": 3.0, "train/loss": 2.5})
    console.trial_retried(name, ACTOR_DIED, failures=1)
    console.trial_started(name)
    console.trial_failed(name, TRACEBACK)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(" (ETA")[0] for line in lines] == [
        f"{name}: started",
        f"{name}: generation 0/2 done pass_at_1=0.25, bleu4=3, train/loss=2.5",
        f"{name}: driver failed (The actor died unexpectedly before finishing this task.); Tune retries it "
        f"(1 of 1 retries), from its first unfinished generation",
        f"{name}: restarted",
        f"{name}: FAILED: RuntimeError: injected failure: this trial always fails at generation 1 (full log: "
        f"{trial_log(tmp_path / 'state', name)}; Ray and Tune: {tmp_path / 'state' / 'logs' / 'grid.log'})",
    ]
    assert lines[-1].startswith("[grid 0s, 1/2 trials done]")
