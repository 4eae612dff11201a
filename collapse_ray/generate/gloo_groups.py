"""One gloo device for all of a process's one-member torch.distributed groups.

vLLM builds a world even for one engine on one CPU: the world group and a device group and a CPU
group for each kind of parallelism, 13 gloo process groups in vLLM 0.32, each with its own gloo
TCP device. A gloo TCP device runs a thread that wakes every 10 ms to ask whether it should stop
(``gloo_tcp_loop``), so an idle vLLM actor on this project's 2-core VM spent 1.3 of its 1.95% of
a core in those 13 threads, and with four trials at once their 5,200 wake-ups a second land on
the cores the trainers run on. A group of one member connects to no one: its device only ever
polls. ``share_one_gloo_device()`` makes every later one-member gloo group of this process use one
shared device (one thread); groups of several members are built as torch builds them.

It replaces ``ProcessGroupGloo`` in ``torch.distributed.distributed_c10d``, the name
``new_group`` and ``init_process_group`` construct (torch 2.13); if a torch lacks it or the
private ``_Options`` and ``create_default_device`` it builds with, nothing changes and the groups
cost what they cost before.
"""
from __future__ import annotations

import datetime
import logging

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)   # torch's own default for gloo groups


def share_one_gloo_device() -> bool:
    """Patch this process (idempotent); whether the patch is in place."""
    try:
        import torch.distributed.distributed_c10d as c10d
        gloo = c10d.ProcessGroupGloo
        gloo._Options, gloo.create_default_device   # what the patch builds with: checked now, not at vLLM's start
    except (ImportError, AttributeError):
        log.debug("no ProcessGroupGloo to patch", exc_info=True)
        return False
    if getattr(gloo, "shares_one_device", False):
        return True
    shared: list = []

    class OneDeviceForSingletonGroups(gloo):
        shares_one_device = True

        def __init__(self, store, rank, size, timeout=DEFAULT_TIMEOUT):
            if isinstance(timeout, gloo._Options) or size != 1:
                super().__init__(store, rank, size, timeout)
                return
            if not shared:
                shared.append(gloo.create_default_device())
            options = gloo._Options()
            options._timeout = timeout
            options._devices = shared
            super().__init__(store, rank, size, options)

    c10d.ProcessGroupGloo = OneDeviceForSingletonGroups
    return True
