"""The report's tables as Markdown, and report.md that embeds figures and tables."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from collapse_ray.report.collect import GROUP


def fmt(x) -> str:
    """4 significant digits; '–' for a missing number."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


def fmt_percent(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.1f}%"


def cell(row) -> str:
    """'mean ± sd (n=k)', or 'mean (n=1)' for one seed; for g > 0 the change against gen 0."""
    if row["n"] == 0:
        return "– (n=0)"
    text = fmt(row["mean"]) + ("" if row["n"] < 2 else f" ± {fmt(row['sd'])}") + f" (n={row['n']}"
    if row["generation"] > 0:
        text += f"; {fmt_percent(row['rel_change'])}"
    return text + ")"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def study_table_md(table: pd.DataFrame) -> str:
    generations = sorted(table["generation"].unique())
    rows = []
    for key, block in table.groupby([*GROUP, "metric"], sort=True):
        by_gen = {int(r["generation"]): cell(r) for _, r in block.iterrows()}
        rows.append([*key, *(by_gen.get(g, "– (n=0)") for g in generations)])
    return markdown_table([*GROUP, "metric", *(f"gen {g}" for g in generations)], rows)


def paired_md(paired: pd.DataFrame, confidence: float = 0.95) -> str:
    rows = [[r["model"], r["task"], r["mitigation"], f"{r['regime']} − {r['baseline']}", r["metric"], r["generation"],
             r["n"], fmt(r["mean_diff"]), f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"]
            for _, r in paired.iterrows()]
    return markdown_table(["model", "task", "mitigation", "difference", "metric", "gen", "n seeds", "mean diff",
                           f"{confidence:.0%} CI"], rows)


def onset_md(onset: pd.DataFrame) -> str:
    rows = [[r["model"], r["task"], r["regime"], r["mitigation"], r["metric"], r["direction"],
             fmt(r["gen0_mean"]), r["onset"]] for _, r in onset.iterrows()]
    return markdown_table([*GROUP, "metric", "collapse direction", "gen-0 mean", "onset generation"], rows)


def directions_md(directions: dict[str, str]) -> str:
    return markdown_table(["metric", "moves under collapse"], sorted(directions.items()))


def report_md(*, source: str, figures: Sequence[Path], out_dir: Path, table_md: str, paired: str, onset: str,
              directions: str, fraction: float, notes: Sequence[str], baseline: str, claims: str = "") -> str:
    blocks = [
        "# Collapse report",
        source,
        "Every number and figure below is drawn from `long.csv` (one row per trial, generation and "
        "metric). Conventions: mean and sd are over seeds (sd: sample standard deviation, ddof = 1; "
        "none for one seed); n is the number of seeds; percentages are the change of the seed mean "
        "against generation 0, relative to |gen-0 mean|.",
        *(f"Note: {n}" for n in notes),
        "## Collapse curves",
        "Line: mean over seeds; band: ±1 sd over seeds (drawn where n ≥ 2); n in the legend. "
        "`overview`: each task's headline metrics, from the model and mitigation that ran the most "
        "regimes on it; `curves_*`: one metric, every model and mitigation.",
        *(f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in figures),
        "## The study's table (`table.csv`)",
        table_md,
        f"## Paired differences against {baseline} (`paired.csv`)",
        f"Each regime minus {baseline} for the same model, task, mitigation and seed, at the last "
        "generation; 95% CI: Student's t interval over the seeds' differences (scipy.stats.t).",
        paired,
        "## Collapse onset (`onset.csv`)",
        f"Onset: the first generation g ≥ 1 from which the seed mean has moved at least {fraction:.0%} "
        "of its generation-0 value in the collapse direction, at g and at g + 1. `n/a`: the "
        "generation-0 mean is 0; `none`: no such generation in the generations run.",
        onset,
        "Collapse directions:",
        directions,
    ]
    if claims:
        blocks += ["## Claims (`claims.csv`)",
                   "Each claim: a signed sum of cells paired on the seed, at the last generation all its cells "
                   "reached unless it names one; 95% CI: Student's t over seeds. It reproduces when the CI "
                   "lies where expected.", claims]
    return "\n\n".join(b.rstrip("\n") for b in blocks) + "\n"
