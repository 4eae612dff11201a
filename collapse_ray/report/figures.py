"""Collapse curves: a metric against generation, one line per regime (mean over seeds, band
of ±1 sd), one panel per model and mitigation. Drawn from the seed summary of the long table."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

BAND = "±1 sd over seeds"


def figure_name(task: str, metric: str) -> str:
    return f"curves_{task}_{metric.replace('/', '_')}.png"


def _n_label(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def draw_metric(summary: pd.DataFrame, task: str, metric: str, path: Path, baseline: str) -> int:
    """One PNG: rows = mitigations, columns = models, one y scale; the ``baseline`` regime drawn
    first; a (model, mitigation) without trials leaves its place blank. Returns the panels drawn."""
    data = summary[(summary["task"] == task) & (summary["metric"] == metric)]
    if data.empty:   # e.g. a task whose trials are all still in generation 0: no figure
        return 0
    models = sorted(data["model"].unique())
    mitigations = sorted(data["mitigation"].unique())
    regimes = sorted(data["regime"].unique(), key=lambda r: (r != baseline, r))
    colors = {r: f"C{i}" for i, r in enumerate(regimes)}
    fig, axes = plt.subplots(len(mitigations), len(models), squeeze=False, sharex=True, sharey=True,
                             figsize=(4.2 * len(models) + 1.0, 3.2 * len(mitigations) + 0.8))
    drawn = 0
    for i, mitigation in enumerate(mitigations):
        for j, model in enumerate(models):
            ax = axes[i][j]
            panel = data[(data["model"] == model) & (data["mitigation"] == mitigation)]
            if panel.empty:   # e.g. a mitigation run on one model only
                ax.set_visible(False)
                continue
            drawn += 1
            for regime in regimes:
                line = panel[panel["regime"] == regime].sort_values("generation")
                if line.empty:
                    continue
                ax.plot(line["generation"], line["mean"], marker="o", markersize=3, color=colors[regime],
                        label=f"{regime} ({_n_label(line['n'])})")
                spread = line[line["n"] >= 2]   # one seed has no spread to draw
                ax.fill_between(spread["generation"], spread["mean"] - spread["sd"], spread["mean"] + spread["sd"],
                                color=colors[regime], alpha=0.2, linewidth=0)
            ax.set_title(f"{model} · mitigation {mitigation}", fontsize=9)
            ax.set_xlabel("generation")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.tick_params(labelleft=True, labelbottom=True)   # shared scales; every panel keeps its numbers (a neighbour may be blank)
            ax.legend(fontsize=7)
    # Every generation a tick, over all panels: they share the x axis, so ticks set per panel would
    # all be the last panel's (a 3-generation panel cut a 10-generation one's ticks at 2).
    gens = data["generation"]
    if gens.max() <= 12:
        axes[0][0].set_xticks(range(int(gens.min()), int(gens.max()) + 1))
    # Two lines: one panel is narrower than the legend of the band, which was cut off at both ends.
    fig.suptitle(f"{task}: {metric}\nline: mean over seeds; band: {BAND}; n: seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def draw_curves(summary: pd.DataFrame, metrics_by_task: dict[str, list[str]], out_dir: Path,
                baseline: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, metrics in sorted(metrics_by_task.items()):
        for metric in metrics:
            path = out_dir / figure_name(task, metric)
            if draw_metric(summary, task, metric, path, baseline):
                paths.append(path)
    return paths
