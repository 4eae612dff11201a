"""Which metrics the report draws and tabulates, and which way each moves under collapse."""
from __future__ import annotations

# Until every task declares ``headline_metrics`` itself; read in one place (headline_metrics).
FALLBACK_HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "codegen": ("pass_at_1", "bleu4"),
    "vulnerability": ("f1", "precision", "recall"),
    "summarization": ("bleu4", "rougeL"),
}

# The drift metrics of each generation's synthetic data that the report draws for every task.
DRIFT_METRICS: tuple[str, ...] = (
    "drift/ppl_gen0_mean", "drift/self_bleu", "drift/distinct_2", "drift/entropy_mean", "drift/tail_mass",
)

# The direction each metric moves as a model collapses: "down" or "up". Collapse onset is only
# computed for metrics listed here.
COLLAPSE_DIRECTION: dict[str, str] = {
    "pass_at_1": "down",            # fewer HumanEval problems solved
    "bleu4": "down",                # further from the reference solution / docstring
    "rougeL": "down",
    "f1": "down",
    "precision": "down",
    "recall": "down",
    "drift/self_bleu": "up",        # samples grow alike
    "drift/distinct_2": "down",     # fewer distinct bigrams
    "drift/entropy_mean": "down",   # the model grows over-confident
    "drift/tail_mass": "down",      # tokens rare in the real data vanish
    "drift/ppl_gen0_mean": "down",  # the data keeps gen 0's modes and loses its tails (README's smoke run)
}


def headline_metrics(task_name: str) -> tuple[str, ...]:
    """The task's own ``headline_metrics`` when it declares them, else the fallback table."""
    from collapse_ray.tasks import get_task

    try:
        task = get_task(task_name)
    except KeyError:   # runs of a task this checkout does not know
        task = None
    return tuple(getattr(task, "headline_metrics", FALLBACK_HEADLINE_METRICS.get(task_name, ())))


def report_metrics(task_name: str, available: set[str]) -> list[str]:
    """The task's headline metrics, then the main drift metrics, as far as the runs logged them."""
    wanted = [*headline_metrics(task_name), *DRIFT_METRICS]
    return [m for m in dict.fromkeys(wanted) if m in available]
