"""What the report draws and compares against, read from the registries that own each name:
a task's headline metrics (tasks/), the metrics' collapse directions (metrics/), the control
regime (regimes/: the one that never trains on synthetic data)."""
from __future__ import annotations

from collapse_ray.metrics.collapse_direction import COLLAPSE_DIRECTION
from collapse_ray.report.collect import ReportError

__all__ = ["COLLAPSE_DIRECTION", "DRIFT_METRICS", "control_regime", "headline_metrics", "report_metrics"]

# The drift metrics of each generation's synthetic data that the report draws for every task.
DRIFT_METRICS: tuple[str, ...] = (
    "drift/ppl_gen0_mean", "drift/self_bleu", "drift/distinct_2", "drift/entropy_mean", "drift/tail_mass",
)


def headline_metrics(task_name: str) -> tuple[str, ...]:
    """The task's declared headline metrics; none for a task this checkout does not know."""
    from collapse_ray.tasks import headline_metrics as declared

    try:
        return tuple(declared(task_name))
    except KeyError:
        return ()


def report_metrics(task_name: str, available: set[str]) -> list[str]:
    """The task's headline metrics, then the main drift metrics, as far as the runs logged them."""
    wanted = [*headline_metrics(task_name), *DRIFT_METRICS]
    return [m for m in dict.fromkeys(wanted) if m in available]


def control_regime() -> str:
    """The label (the runs' ``regime`` tag) of the registered regime that, with its defaults,
    never trains on synthetic data: the baseline of paired differences."""
    from collapse_ray.regimes import regime_class, regime_names

    controls = []
    for name in regime_names():
        try:
            regime = regime_class(name)()
        except TypeError:   # required parameters: a regime defined by them, not a control
            continue
        if not regime.uses_synthetic:
            controls.append(regime.label())
    if len(controls) != 1:
        raise ReportError(f"expected one registered regime that never uses synthetic data, found {controls}")
    return controls[0]
