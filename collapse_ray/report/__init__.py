"""``collapse-ray report``: collapse curves, the study's table, paired differences against
real-only and collapse onset, all drawn from one long CSV of the runs' metric histories.

    long.csv                 trial, model, task, regime, mitigation, seed, generation, metric, value
    runs.json                each trial's MLflow run id and status, and the grid launches (parent runs)
    figures/overview.png     every task's headline metrics, its main regimes (one panel each)
    figures/curves_*.png     one per task x metric
    table.csv / table.md     generations 0, 5, 10 (or the last): mean, sd, n, change against gen 0
    paired.csv / paired.md   regime - real-only at the last generation, 95% t interval over seeds
    onset.csv / onset.md     first generation of collapse per metric
    claims.csv / claims.md   with --claims FILE: each claim's paired contrast and verdict (claims.py)
    report.md                all of the above
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from collapse_ray.report import claims, collect, figures, markdown, stats
from collapse_ray.report.collect import ReportError
from collapse_ray.report.definitions import COLLAPSE_DIRECTION, control_regime, headline_metrics, report_metrics

__all__ = ["NO_STORE", "ReportError", "ReportFiles", "build_report", "main"]
NO_STORE = "none"   # --tracking-uri none: the report of --with files alone


@dataclass
class ReportFiles:
    out_dir: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.out_dir / "report.md"


def build_report(experiment: str, tracking_uri: str, out_dir: str | Path, parent_run_id: str | None = None,
                 onset_fraction: float = 0.10, claims_path: str | Path | None = None,
                 earlier: list[str | Path] = ()) -> ReportFiles:
    """``earlier``: long CSVs of earlier reports whose trials join the store's (``--with``)."""
    if not 0 < onset_fraction < 1:
        raise ReportError(f"--onset-fraction must be between 0 and 1, got {onset_fraction}")
    # Read before any work: a malformed claims file is the user's one-line error, not a late crash.
    study_claims = claims.load_claims(claims_path) if claims_path else None
    earlier_tables = [(Path(path), collect.read_long_csv(Path(path))) for path in earlier]
    no_store = tracking_uri == NO_STORE
    if no_store and (not earlier or parent_run_id):
        raise ReportError(f"--tracking-uri {NO_STORE} reads no MLflow store: give the trials with --with LONG_CSV "
                          f"(and no --parent-run, a run of a store)")
    if no_store and all(table.empty for _, table in earlier_tables):
        raise ReportError(f"--with {', '.join(str(path) for path, _ in earlier_tables)}: no rows; with "
                          f"--tracking-uri {NO_STORE} they are the report's only trials")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if no_store:   # a study whose stores are gone, from the long CSVs kept beside its results
        runs, notes, long = [], [], pd.DataFrame(columns=collect.COLUMNS)
    else:
        with collect.reading_client(tracking_uri) as client:
            runs, notes = collect.collect_runs(client, experiment, parent_run_id)
            long = collect.long_table(client, runs, experiment)
    long, earlier_notes, added = collect.add_earlier_reports(long, earlier_tables)
    notes.extend(earlier_notes)
    collect.write_long_csv(long, out / "long.csv")
    index = collect.run_index(runs, experiment, tracking_uri)
    if earlier:   # their run ids are in the runs.json kept beside each of those files
        index["from_earlier_reports"] = added
    (out / "runs.json").write_text(json.dumps(index, indent=1) + "\n")
    long = collect.read_long_csv(out / "long.csv")   # every figure and table comes from the file

    available = set(long["metric"])
    metrics_by_task = {task: report_metrics(task, available) for task in sorted(long["task"].unique())}
    for task, metrics in metrics_by_task.items():
        if not metrics:
            notes.append(f"task {task}: none of its headline or drift metrics were logged")
    summary = stats.seed_summary(long)
    table = stats.study_table(summary, metrics_by_task)
    baseline = control_regime()
    paired = stats.paired_differences(long, metrics_by_task, baseline)
    onset = stats.onset_table(summary, metrics_by_task, COLLAPSE_DIRECTION, onset_fraction)
    for name, frame in (("table", table), ("paired", paired), ("onset", onset)):
        frame.to_csv(out / f"{name}.csv", index=False, float_format="%.17g")
    table_md, paired_md, onset_md = markdown.study_table_md(table), markdown.paired_md(paired), markdown.onset_md(onset)
    (out / "table.md").write_text(table_md)
    (out / "paired.md").write_text(paired_md)
    (out / "onset.md").write_text(onset_md)
    if paired.empty:
        notes.append(f"no paired differences: no {baseline} runs beside another regime")

    claims_section = ""
    if study_claims:
        verdicts = claims.claims_table(long, study_claims)
        verdicts.to_csv(out / "claims.csv", index=False, float_format="%.17g")
        claims_section = claims.claims_md(verdicts)
        (out / "claims.md").write_text(claims_section)

    headline_by_task = {task: [m for m in headline_metrics(task) if m in available] for task in metrics_by_task}
    overview = out / "figures" / figures.OVERVIEW
    figure_paths = ([overview] if figures.draw_overview(summary, headline_by_task, overview, baseline) else []) \
        + figures.draw_curves(summary, metrics_by_task, out / "figures", baseline)
    n_trials = long["trial"].nunique()
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    source = (("No MLflow store (`--tracking-uri none`)" if no_store else f"Experiment `{experiment}` at `{tracking_uri}`")
              + (f", grid launch (parent run) `{parent_run_id}`" if parent_run_id else "")
              + "".join(f"; with {len(trials)} trials from `{path}`" for path, trials in added.items())
              + f": {n_trials} trials, generations 0..{int(long['generation'].max())}. Written {when}.")
    (out / "report.md").write_text(markdown.report_md(
        source=source, figures=figure_paths, out_dir=out, table_md=table_md, paired=paired_md, onset=onset_md,
        directions=markdown.directions_md(COLLAPSE_DIRECTION), fraction=onset_fraction, notes=notes,
        baseline=baseline, claims=claims_section))
    if parent_run_id:   # written to the store itself, not to the copy the report read
        collect.open_client(tracking_uri).log_artifacts(parent_run_id, str(out), artifact_path="report")
    return ReportFiles(out, figure_paths, notes)


def main(args) -> None:
    """The CLI's entry: ``args`` has experiment, tracking_uri, out, parent_run, onset_fraction."""
    out = args.out or str(Path("reports") / args.experiment)
    files = build_report(args.experiment, args.tracking_uri, out, args.parent_run, args.onset_fraction,
                         getattr(args, "claims", None), getattr(args, "earlier", None) or [])
    for note in files.notes:
        print(f"note: {note}")
    logged = f"; logged to run {args.parent_run} under report/" if args.parent_run else ""
    print(f"report: {files.report} ({len(files.figures)} figures, long.csv, runs.json, table/paired/onset .md and .csv){logged}")
