"""Ray Train's ``TorchTrainer`` without the helper actors that would have nothing to do here.

A trial's worker group lives for the whole trial, and so does every helper actor Train starts
beside it. An idle Ray process is not free: its core worker wakes every 10 ms, about 0.8% of a
core each on this project's 2-core machine, and four trials at once keep four of each
(docs/BENCHMARKS.md, "Idle Ray workers"). Two of Train's helpers cannot do anything for a group
like ours, so the trainer leaves them out:

- ``DatasetManager`` (Train's datasets callback): it serves Ray Data shards, and the group is given
  no Ray Data datasets (jobs carry paths; ray_worker.serve_jobs reads them itself).
- ``PlacementGroupCleaner``: it removes the group's placement group if the controller dies, and it
  asks Ray's state API whether the controller lives. Without the dashboard of ``ray[default]``
  that API never answers, so the cleaner can only log "State API may be temporarily unavailable"
  every few seconds for the trial's whole life. It is kept wherever the API answers (a cluster
  started by ``ray up``); where it does not, worker_group.py's own record of the placement group
  frees it for the trial's next group.

Only Ray Train calls ``_create_default_callbacks`` (a private hook); a Ray that renamed it would
simply never call the override, and the trainer would start Train's full set again.
"""
from __future__ import annotations

import functools

from ray.train.torch import TorchTrainer

DATASETS_CALLBACK = "DatasetsCallback"
CLEANER_CALLBACK = "PlacementGroupCleanerCallback"
STATE_API_TIMEOUT_S = 5


class LeanTorchTrainer(TorchTrainer):
    """A ``TorchTrainer`` whose controller starts no idle helpers (see the module's docstring)."""

    def _create_default_callbacks(self):
        idle = idle_helpers(has_datasets=bool(self.datasets), state_api=state_api_answers())
        return [c for c in super()._create_default_callbacks() if type(c).__name__ not in idle]


def idle_helpers(*, has_datasets: bool, state_api: bool) -> frozenset[str]:
    """Names of Train's callbacks whose actor would have nothing to do in this group."""
    idle = set()
    if not has_datasets:
        idle.add(DATASETS_CALLBACK)
    if not state_api:
        idle.add(CLEANER_CALLBACK)
    return frozenset(idle)


@functools.lru_cache(maxsize=1)
def state_api_answers() -> bool:
    """Whether Ray's state API answers in this Ray (it needs the dashboard of ``ray[default]``).
    Asked once per process: the answer is the install's, not the moment's."""
    from ray.util.state import list_nodes

    try:
        list_nodes(limit=1, timeout=STATE_API_TIMEOUT_S, raise_on_missing_output=False)
    except Exception:   # ServerUnavailable, timeouts, a missing dependency: all mean "no"
        return False
    return True
