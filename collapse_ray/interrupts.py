"""SIGINT and SIGTERM stop a trial the way Ctrl-C does: as an exception in the main thread, so
every ``finally`` runs, the MLflow run is marked KILLED and finished generations stay on disk.

SIGTERM is what ``kill``, Slurm and Kubernetes send; by default it ends Python at once, without
any cleanup, leaving the MLflow run RUNNING. ``stop_on_signals`` turns it into ``Interrupted``, a
``KeyboardInterrupt`` (so code that already handles Ctrl-C handles it too). The grid driver uses
``sigterm_as_sigint`` instead: Tune stops a grid cleanly on SIGINT (it saves its state and stops the
trials), and ends the process at once on SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(error: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (a plain one is Ctrl-C's SIGINT)."""
    return getattr(error, "signum", signal.SIGINT)


@contextmanager
def stop_on_signals(signals=STOP_SIGNALS):
    """Within the block, the first of ``signals`` raises ``Interrupted`` in the main thread; later
    ones are ignored while the cleanup runs (SIGKILL still forces). Elsewhere than the main thread
    (Python delivers signals only there) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum, frame):
        nonlocal stopping
        if stopping:
            print(f"{signal.Signals(signum).name} again: already stopping (saving state); "
                  f"kill -9 {os.getpid()} forces it", file=sys.stderr, flush=True)
            return
        stopping = True
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def sigterm_as_sigint():
    """Within the block a SIGTERM is delivered to this process as a SIGINT, so that whoever handles
    SIGINT (Ctrl-C; Tune's clean stop during a fit) handles ``kill``, Slurm and Kubernetes too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
