"""Collapse curves: a metric against generation, one line per regime (mean over seeds, band
of ±1 sd), one panel per model and mitigation; and the overview, every task's headline metrics
in one figure. Drawn from the seed summary of the long table."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import pandas as pd  # noqa: E402

BAND = "±1 sd over seeds"
OVERVIEW = "overview.png"


def figure_name(task: str, metric: str) -> str:
    return f"curves_{task}_{metric.replace('/', '_')}.png"


def _n_label(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def _regime_colors(data: pd.DataFrame, baseline: str) -> dict[str, str]:
    """The ``baseline`` regime first (colour C0), the others by name."""
    regimes = sorted(data["regime"].unique(), key=lambda r: (r != baseline, r))
    return {r: f"C{i}" for i, r in enumerate(regimes)}


def _tick_every_generation(ax, generations: pd.Series) -> None:
    """A tick for each generation, up to the study's length (a longer run keeps matplotlib's ticks)."""
    if generations.max() <= 12:
        ax.set_xticks(range(int(generations.min()), int(generations.max()) + 1))


def _plot_regimes(ax, panel: pd.DataFrame, colors: dict[str, str], metric: str, legend: bool = True) -> None:
    """One line per regime of ``panel``, in the order of ``colors`` (mean over seeds, ±1 sd band
    where n >= 2); ``legend``: the panel's own, with each regime's seeds."""
    for regime in colors:
        line = panel[panel["regime"] == regime].sort_values("generation")
        if line.empty:
            continue
        ax.plot(line["generation"], line["mean"], marker="o", markersize=3, color=colors[regime],
                label=f"{regime} ({_n_label(line['n'])})")
        spread = line[line["n"] >= 2]   # one seed has no spread to draw
        ax.fill_between(spread["generation"], spread["mean"] - spread["sd"], spread["mean"] + spread["sd"],
                        color=colors[regime], alpha=0.2, linewidth=0)
    ax.set_xlabel("generation")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def draw_metric(summary: pd.DataFrame, task: str, metric: str, path: Path, baseline: str) -> int:
    """One PNG: rows = mitigations, columns = models, one y scale; the ``baseline`` regime drawn
    first; a (model, mitigation) without trials leaves its place blank. Returns the panels drawn."""
    data = summary[(summary["task"] == task) & (summary["metric"] == metric)]
    if data.empty:   # e.g. a task whose trials are all still in generation 0: no figure
        return 0
    models = sorted(data["model"].unique())
    mitigations = sorted(data["mitigation"].unique())
    colors = _regime_colors(data, baseline)
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
            _plot_regimes(ax, panel, colors, metric)
            ax.set_title(f"{model} · mitigation {mitigation}", fontsize=9)
            ax.tick_params(labelleft=True, labelbottom=True)   # shared scales; every panel keeps its numbers (a neighbour may be blank)
    # Every generation a tick, over all panels: they share the x axis, so ticks set per panel would
    # all be the last panel's (a 3-generation panel cut a 10-generation one's ticks at 2).
    _tick_every_generation(axes[0][0], data["generation"])
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


def overview_cells(summary: pd.DataFrame, headline_by_task: dict[str, list[str]]) -> list[tuple[str, str, str, str]]:
    """(task, metric, model, mitigation) of each overview panel: every task's headline metrics,
    each from the (model, mitigation) that ran the most regimes on that task (then the most seeds
    and generations; then by name), so a side trial (a second model, one mitigation) never hides
    the main comparison."""
    cells = []
    for task, metrics in sorted(headline_by_task.items()):
        for metric in metrics:
            data = summary[(summary["task"] == task) & (summary["metric"] == metric)]
            if data.empty:
                continue
            runs = data.groupby(["model", "mitigation"]).agg(regimes=("regime", "nunique"), rows=("n", "sum"))
            model, mitigation = min(runs.index, key=lambda k: (-runs.loc[k, "regimes"], -runs.loc[k, "rows"], k))
            cells.append((task, metric, model, mitigation))
    return cells


def draw_overview(summary: pd.DataFrame, headline_by_task: dict[str, list[str]], path: Path, baseline: str) -> int:
    """The study in one PNG: a column per task, a row per headline metric, the regimes of the
    panel's (model, mitigation) (``overview_cells``; every trial is in the per-metric figures).
    Returns the panels drawn (0: no file)."""
    cells = overview_cells(summary, headline_by_task)
    if not cells:
        return 0
    by_task: dict[str, list[tuple[str, str, str]]] = {}   # task -> its panels, top to bottom
    for task, *panel_of in cells:
        by_task.setdefault(task, []).append(tuple(panel_of))
    tasks = list(by_task)
    rows = max(len(panels) for panels in by_task.values())
    colors = _regime_colors(summary[summary["task"].isin(tasks)], baseline)   # one colour a regime in every panel
    fig, axes = plt.subplots(rows, len(tasks), squeeze=False, figsize=(4.4 * len(tasks) + 0.6, 3.3 * rows + 0.8))
    for ax in axes.flat:
        ax.set_visible(False)
    drawn: set[str] = set()
    for j, task in enumerate(tasks):
        for i, (metric, model, mitigation) in enumerate(by_task[task]):
            ax = axes[i][j]
            ax.set_visible(True)
            panel = summary[(summary["task"] == task) & (summary["metric"] == metric) & (summary["model"] == model)
                            & (summary["mitigation"] == mitigation)]
            _plot_regimes(ax, panel, colors, metric, legend=False)   # one for the figure: a panel's hid its lines
            ax.set_title(f"{task}: {metric}\n{model} · mitigation {mitigation} · {_n_label(panel['n'])} seeds",
                         fontsize=9)
            _tick_every_generation(ax, panel["generation"])
            drawn.update(panel["regime"])
    legend = [Line2D([], [], color=color, marker="o", markersize=3, label=regime)
              for regime, color in colors.items() if regime in drawn]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 6), fontsize=8, frameon=False)
    fig.suptitle(f"Each task's headline metrics by generation; line: mean over seeds; band: {BAND}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(cells)
