"""How many runs `run_many` has at once: at least MIN_WORKERS by default (a run mostly waits,
so two at a time on a 2-core machine left the evaluation 20x slower beside a grid's trials), no
more than asked, in input order. The runs are a stand-in that counts them (this is the pool's
arithmetic; the sandbox itself is tested beside this file)."""
from __future__ import annotations

import threading
import time

from collapse_ray.sandbox import api


def counting_runs(monkeypatch) -> dict:
    seen = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def run_program(source, **limits):
        with lock:
            seen["now"] += 1
            seen["peak"] = max(seen["peak"], seen["now"])
        time.sleep(0.3)
        with lock:
            seen["now"] -= 1
        return source

    monkeypatch.setattr(api, "run_program", run_program)
    monkeypatch.setattr(api, "available_cores", lambda: 2)
    return seen


def test_run_many_runs_at_least_min_workers_at_once_by_default_in_input_order(monkeypatch):
    seen = counting_runs(monkeypatch)
    sources = [f"print({i})\n" for i in range(3 * api.MIN_WORKERS)]
    assert api.run_many(sources, timeout_s=5) == sources
    assert api.MIN_WORKERS >= 8 and seen["peak"] == api.MIN_WORKERS


def test_run_many_keeps_to_the_workers_asked_for(monkeypatch):
    seen = counting_runs(monkeypatch)
    api.run_many([f"print({i})\n" for i in range(6)], max_workers=2, timeout_s=5)
    assert seen["peak"] == 2
