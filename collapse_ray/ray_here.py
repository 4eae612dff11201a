"""Starting or joining Ray (the grid's launch, or a trainer that finds no Ray running).

Ray that this process starts is a cluster of this one machine: no autoscaler drains its node,
so Ray Train's preemption watcher has nothing to watch. It is still one more Ray actor per
trial, and an idle Ray worker is not free: its core worker wakes every 10 ms to check for
signals, about 0.8% of a core each on this project's 2-core machine (docs/BENCHMARKS.md, "Idle
Ray workers"). The watcher is turned off in this process's environment before Ray starts, so
every worker inherits that (Train also propagates it from a trial driver to its controller); a
user's own setting wins. A cluster named by RAY_ADDRESS or ``address`` (other than "local")
keeps Train's default.

The same goes for Ray's log monitor, which sends workers' output to the driver (the grid's log):
below 1,000 files it lists the session's log folder and checks every file in it on each 0.1 s
poll, 72 CPU-seconds of a whole `make grid` here. A Ray started here lists it every
LOG_FOLDER_LISTING_S instead (a new worker's first line reaches the driver up to that much later;
lines of a worker it already follows are still read on every poll: benchmarks/log_monitor.py).
"""
from __future__ import annotations

import os

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
LOG_FOLDER_LISTING_S = 2.0
# Read by Ray's log monitor process at its start: list the folder every LOG_NAME_UPDATE_INTERVAL_S
# whatever the number of files in it.
LOG_MONITOR_ENV = {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0", "LOG_NAME_UPDATE_INTERVAL_S": str(LOG_FOLDER_LISTING_S)}


def init_ray(**init_options):
    """``ray.init(**init_options)``; unless a cluster is named, without Train's preemption watcher
    and with a log monitor that lists its folder less often."""
    import ray

    if starts_local_ray(init_options.get("address") or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        for name, value in LOG_MONITOR_ENV.items():
            os.environ.setdefault(name, value)
    return ray.init(**init_options)


def starts_local_ray(address: str | None) -> bool:
    """Whether ``ray.init(address)`` starts a Ray of this machine rather than joining a cluster
    (None may also join a ``ray start`` cluster of this machine, whose workers do not inherit
    this process's environment: no effect there)."""
    return not address or address == "local"
