"""Checkpoint retention: which generations' models stay on disk as a trial goes on.

At real scale models dominate a trial's disk (a 14B full fine-tune is ~28 GB per generation);
synthetic data is small and always kept (accumulate trains on all of it). Whatever the policy,
generation 0's model (the reference drift is measured against) and the last finished one (resume
and ``init: previous`` start from it) stay.
"""
from __future__ import annotations

from collapse_ray.config import RetentionConfig
from collapse_ray.trial_state import TrialState


def models_to_keep(policy: RetentionConfig, last_finished: int) -> set[int]:
    """The generations whose model stays once generation ``last_finished`` has finished."""
    if policy.keep_models == "all":
        return set(range(last_finished + 1))
    return {0, last_finished} | {g for g in policy.keep_generations if g <= last_finished}


def apply_retention(state: TrialState, policy: RetentionConfig, last_finished: int) -> list[int]:
    """Prune the models of finished generations the policy does not keep; returns those pruned now."""
    keep = models_to_keep(policy, last_finished)
    return [g for g in range(last_finished + 1) if g not in keep and state.prune_model(g)]
