"""How a CPU grid's trials share the cores over time: the dry-run's wall-time estimate. Pure.

Tune starts the trials in the order it is given (``shortest_order`` picks it), at most
``concurrency`` at once, each as soon as one ends. A trial whose generation 0 another trial is
computing (shared_gen0.py) waits on its lock, holding its slot while it computes nothing.
Running trials share the cores evenly, each using at most ``cores_per_trial`` (its phases run on
that many threads). So the grid finishes later than its compute floor (every trial's work over
the cores) when too few trials compute at once: while some wait for a shared generation 0, and
in the tail, when fewer trials are left than cores.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

EPS = 1e-9


@dataclass(frozen=True)
class TrialWork:
    """A trial's seconds at full speed (``cores_per_trial`` cores): its generation 0 (what it
    computes of it: all of it for the trial that computes the shared one, sampling and drift for
    the others) and its later generations; ``gen0_key`` names the generation 0 it shares."""
    gen0_key: str
    gen0_s: float
    later_s: float


@dataclass(frozen=True)
class Schedule:
    wall_s: float
    idle_share: float    # of the cores x wall: cores no trial could use
    waiting_s: float     # trial-seconds spent waiting for a shared generation 0


@dataclass
class _Running:
    work: TrialWork
    parts: list[float]   # seconds left of its generation 0, then of its later generations
    computes_gen0: bool  # it computes the shared generation 0 (and publishes it after its first part)
    waiting: bool


def simulate(trials: list[TrialWork], concurrency: int, cores: float, cores_per_trial: float = 1.0) -> Schedule:
    """The grid's schedule with trials started in the given order (module docstring); ``cores``:
    the cluster's CPUs."""
    pending = list(trials)
    running: list[_Running] = []
    claimed: set[str] = set()   # generation-0 keys a trial computes or has computed
    shared: set[str] = set()    # generation-0 keys computed
    now = idle = waiting = 0.0
    while pending or running:
        while pending and len(running) < max(1, concurrency):
            work = pending.pop(0)
            first = work.gen0_key not in claimed
            claimed.add(work.gen0_key)
            running.append(_Running(work, [work.gen0_s, work.later_s], first, not first and work.gen0_key not in shared))
        active = [r for r in running if not r.waiting]
        # Each active trial's speed against its full one (a waiter's key is computed by an active trial).
        speed = min(1.0, cores / (len(active) * cores_per_trial))
        step = min(r.parts[0] for r in active) / speed
        now += step
        idle += (cores - speed * cores_per_trial * len(active)) * step
        waiting += step * (len(running) - len(active))
        for r in active:
            r.parts[0] -= speed * step
            while r.parts and r.parts[0] <= EPS:
                r.parts.pop(0)
                if r.computes_gen0 and len(r.parts) == 1:
                    shared.add(r.work.gen0_key)
        for r in running:
            r.waiting = r.waiting and r.work.gen0_key not in shared
        running = [r for r in running if r.parts]
    return Schedule(now, idle / (cores * now) if now else 0.0, waiting)


EXHAUSTIVE_GROUPS = 6   # 720 orders, each simulated in well under a millisecond a trial
GAIN = 0.01             # another order must finish this much sooner to replace the given one


def shortest_order(groups: list[list[TrialWork]], concurrency: int, cores: float,
                   cores_per_trial: float = 1.0) -> list[int]:
    """The order of ``groups`` (each a generation-0 key's trials, started together in their own
    order: its first trial computes generation 0 while the others wait for it) whose schedule ends
    soonest. Long trials started last leave one trial computing alone at the end while the other
    cores idle, so the order matters. Every order is tried up to EXHAUSTIVE_GROUPS groups; more
    start longest first and swap neighbours while that helps. The given order stays unless another
    is at least GAIN shorter, so equal estimates never reorder a grid."""
    def wall(order) -> float:
        return simulate([w for i in order for w in groups[i]], concurrency, cores, cores_per_trial).wall_s

    given = list(range(len(groups)))
    if len(groups) <= EXHAUSTIVE_GROUPS:
        best = min(itertools.permutations(given), key=wall)
    else:
        best = sorted(given, key=lambda i: -sum(w.gen0_s + w.later_s for w in groups[i]))
        best_wall, improved = wall(best), True
        while improved:
            improved = False
            for i in range(len(best) - 1):
                swapped = best[:i] + [best[i + 1], best[i]] + best[i + 2:]
                if (swapped_wall := wall(swapped)) < best_wall * (1 - 1e-9):
                    best, best_wall, improved = swapped, swapped_wall, True
    return list(best) if wall(best) < wall(given) * (1 - GAIN) else given
