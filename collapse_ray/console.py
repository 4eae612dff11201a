"""What the console shows: the loop's and the grid's progress lines, not the libraries' noise.

    quiet_libraries()      progress bars off (tqdm, huggingface_hub, transformers' "Loading
                           weights"), transformers / vLLM / MLflow / alembic at WARNING, and
                           DeepSpeed's "Setting accelerator to CPU" where there is no GPU
    ray_init_options()     ray.init's arguments for a quiet console (workers get the same environment)
    output_to(log)         this process's stdout and stderr (file descriptors 1 and 2: Python, C++
                           and child processes alike) go to a log file; yields a stream to the console
    prepare_run_console()  `collapse-ray run`: the above that apply to one trial in this process

``--verbose`` skips all of it. No Ray import: Ray stays at the edge (tests/test_ray_at_the_edge.py).
"""
from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

# Environment read by the libraries themselves (at import, or at each bar), so Ray workers that
# inherit it are as quiet as this process.
QUIET_ENV = {
    "TQDM_DISABLE": "1",                    # tqdm >= 4.66 reads TQDM_* as defaults: every library's bars
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",    # huggingface_hub's bars, and transformers' (it asks the hub)
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",      # MLflow's INFO lines
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",   # "🏃 View run ... at: URL", printed as a run ends
}
QUIET_LOGGERS = ("transformers", "vllm", "mlflow", "alembic", "datasets", "huggingface_hub")
# Warnings that are not news to this project's user, by logger and message start. DeepSpeed's
# accelerator detection warns in every process that imports it (transformers' save_pretrained does,
# as the base model is saved) on a machine without a GPU, where the CPU is what was meant.
NOT_NEWS = {"DeepSpeed": ("Setting accelerator to CPU.",)}


def quiet_env() -> dict[str, str]:
    """``QUIET_ENV`` less what the environment already sets (the user's choice wins, and Ray
    refuses a ray.init env var that ``ray job submit`` also set)."""
    return {k: v for k, v in QUIET_ENV.items() if k not in os.environ}


def quiet_libraries() -> None:
    """No progress bars, and WARNING and above from the libraries (ERROR from transformers), in this
    process from now on."""
    os.environ.update(quiet_env())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, starts in NOT_NEWS.items():
        logger = logging.getLogger(name)   # the library's own logger once it is imported: the same object
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    # Libraries already imported have read the environment: tell them directly.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def ray_init_options(verbose: bool, log_to_driver: bool, logging_level: int = logging.INFO) -> dict:
    """``ray.init`` arguments: the quiet environment for every worker of this job, whether
    workers' output is printed by this process (the grid's driver sends it to its log file), and
    the level of Ray's own logger here."""
    if verbose:
        return {}
    return {"log_to_driver": log_to_driver, "logging_level": logging_level, "runtime_env": {"env_vars": quiet_env()}}


@contextmanager
def output_to(log_path: str | os.PathLike) -> Iterator[TextIO]:
    """For the block, file descriptors 1 and 2 of this process write (append) to ``log_path``:
    Python's prints and logging, C++ libraries (Ray's core worker, raylet warnings) and child
    processes started meanwhile. Yields a stream that still writes where stdout wrote before."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _flush()
    console, opened = _console_stream()
    saved, saved_streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # Python's own streams too: where sys.stdout is not descriptor 1 (pytest, a notebook), Tune's
    # prints would miss the log.
    log_stream = os.fdopen(os.dup(log_fd), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.stdout = sys.stderr = log_stream
        yield console
    finally:
        _flush()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        # log_stream stays open: a logging handler made in the block may still hold it, and
        # anything it writes later belongs in the log anyway.
        if opened:
            console.close()


def _console_stream() -> tuple[TextIO, bool]:
    """(stream, whether it was opened here): a copy of stdout's descriptor, or, where stdout is no
    file (pytest's capsys), stdout itself."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return sys.stdout, False
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(sys.stdout, "encoding", None) or "utf-8"), True


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def prepare_run_console(cfg, verbose: bool) -> None:
    """``collapse-ray run`` of ``cfg`` (an ExperimentConfig): only the loop's progress lines,
    unless ``verbose``. Where the trial uses Ray (Ray Train, the vLLM actor), the local Ray it
    starts keeps its workers' output in its session logs (one line says where) and inherits the
    quiet environment; Ray reads these variables when it is imported, later, by the backends."""
    if verbose:
        return
    quiet_libraries()
    if cfg.training.backend != "ray" and cfg.generator.backend != "vllm":
        return
    os.environ.setdefault("RAY_LOG_TO_DRIVER", "0")
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")   # "Started a local Ray instance." and the like
    print(f"[run] Ray workers' output: {ray_session_logs()} (on a cluster, each node's; --verbose prints it here)",
          file=sys.stderr, flush=True)


def ray_session_logs() -> Path:
    """Where a local Ray keeps its latest session's logs (as Ray's get_default_ray_temp_dir finds its
    temp dir), without importing Ray."""
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(temp) / "ray" / "session_latest" / "logs"
