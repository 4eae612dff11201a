"""The cores this process may run on: a container's or taskset's limit, not the host's count."""
from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # no affinity API (macOS)
        return os.cpu_count() or 1
