"""The runs of an MLflow experiment (or of one grid launch) as one long table:
one row per (trial, generation, metric). Every figure and table of the report is drawn from it."""
from __future__ import annotations

import os
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from collapse_ray.config import MAX_GENERATIONS, MAX_SEED
from collapse_ray.errors import CollapseRayError
from collapse_ray.tracking import GENERATION_KEY, GRID_NAME_TAG, PARENT_RUN_TAG

COLUMNS = ["trial", "model", "task", "regime", "mitigation", "seed", "generation", "metric", "value"]
# The tags every trial run carries (labels.TrialLabels.tags); runs without them (a grid's parent run) are skipped.
TRIAL_TAGS = ("model", "task", "regime", "seed", "mitigation")
GROUP = ["model", "task", "regime", "mitigation"]   # a seed-averaged line of the study


class ReportError(CollapseRayError):
    pass


def open_client(tracking_uri: str):
    """A client on the live store (``--parent-run`` writes there); the report reads with ``reading_client``."""
    check_store(tracking_uri)
    return mlflow_client(tracking_uri, shown_as=tracking_uri)


def check_store(tracking_uri: str) -> None:
    """The store answers (a server) or is a readable SQLite file, named in one line if not."""
    from collapse_ray.config import sqlite_path
    from collapse_ray.path_rules import check_path_text
    from collapse_ray.preflight import is_sqlite_file
    from collapse_ray.tracking import TrackingError, check_reachable

    try:
        check_reachable(tracking_uri)   # seconds, before mlflow's import
    except TrackingError as e:
        raise ReportError(str(e)) from None
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    check_path_text(str(db), "--tracking-uri")
    if not db.is_file():   # MLflow would silently create an empty store here
        raise ReportError(f"--tracking-uri {tracking_uri}: no such database file")
    if not os.access(db, os.R_OK) or not is_sqlite_file(db):
        raise ReportError(f"--tracking-uri {tracking_uri}: {db} is not a readable SQLite database")


def mlflow_client(uri: str, shown_as: str):
    """MLflow's client; it opens (and checks) the store at once, so a store it cannot use is named here."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:   # sqlalchemy's or MLflow's: the store, not this program, is at fault
        raise ReportError(f"--tracking-uri {shown_as}: MLflow cannot open the store "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


@contextmanager
def reading_client(tracking_uri: str):
    """A client to read the store with. A sqlite file is read from a copy taken at once (sqlite's
    backup API: one read lock): while a grid writes to the same file, each of the report's
    thousands of queries would otherwise queue behind the writers' locks (a study's report took
    34 min beside a running grid, 14 s after it). The copy is what the report shows."""
    from collapse_ray.config import sqlite_path

    db = sqlite_path(tracking_uri)
    if db is None:
        yield open_client(tracking_uri)
        return
    check_store(tracking_uri)   # the live file is only copied, never opened by MLflow
    with tempfile.TemporaryDirectory(prefix="collapse-ray-report-") as tmp:
        snapshot = Path(tmp) / "mlflow.db"
        take_snapshot(db, snapshot)
        yield mlflow_client(f"sqlite:///{snapshot}", shown_as=f"{tracking_uri} (read from a copy)")


def take_snapshot(db: Path, into: Path) -> None:
    source, copy = sqlite3.connect(db, timeout=120), sqlite3.connect(into)   # waits out a commit, once
    try:
        source.backup(copy)
    except sqlite3.Error as e:
        raise ReportError(f"cannot read the MLflow store {db}: {e}") from None
    finally:
        copy.close()
        source.close()


def find_experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"experiment {experiment!r} not found; experiments in this store: "
                          f"{', '.join(names) or '(none)'}")
    return exp.experiment_id


def trial_runs(client, experiment_id: str, parent_run_id: str | None = None) -> tuple[list, list[str]]:
    """The experiment's trial runs (or only the children of ``parent_run_id``), one per
    model x task x regime x mitigation x seed: when an experiment holds several launches of one
    trial, the latest started wins. Returns (runs, notes about what was skipped)."""
    notes = []
    filter_string = ""
    if parent_run_id:
        _check_parent(client, experiment_id, parent_run_id)
        filter_string = f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    tagged = [r for r in runs if all(t in r.data.tags for t in TRIAL_TAGS)]
    others = [r for r in runs if r not in tagged and GRID_NAME_TAG not in r.data.tags]   # grid parents are expected
    if others:
        notes.append(f"{len(others)} run(s) without the tags {', '.join(TRIAL_TAGS)} skipped")
    latest: dict[tuple, object] = {}
    for run in sorted(tagged, key=lambda r: r.info.start_time or 0):
        key = tuple(run.data.tags[t] for t in TRIAL_TAGS)
        if key in latest:
            notes.append(f"trial {'/'.join(key)} has several runs; using the latest ({run.info.run_id})")
        latest[key] = run
    return list(latest.values()), notes


def _check_parent(client, experiment_id: str, parent_run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        parent = client.get_run(parent_run_id)
    except MlflowException:
        raise ReportError(f"--parent-run {parent_run_id}: no such run in this tracking store") from None
    if parent.info.experiment_id != experiment_id:
        raise ReportError(f"--parent-run {parent_run_id} belongs to experiment id {parent.info.experiment_id}, "
                          f"not to the experiment asked for (id {experiment_id})")


def trial_name(run) -> str:
    """A run's trial column in long.csv and its key in runs.json: the two must agree."""
    return run.info.run_name or run.info.run_id


def run_rows(client, run) -> list[dict]:
    """Every metric's history of one run: one row per (generation = step, metric)."""
    tags = run.data.tags
    base = {"trial": trial_name(run), "model": tags["model"], "task": tags["task"],
            "regime": tags["regime"], "mitigation": tags["mitigation"], "seed": int(tags["seed"])}
    rows = []
    for key in sorted(k for k in run.data.metrics if k != GENERATION_KEY):
        by_step = {}
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp):
            by_step[m.step] = m.value   # a step logged twice keeps its latest value
        rows.extend({**base, "generation": int(step), "metric": key, "value": value}
                    for step, value in sorted(by_step.items()))
    return rows


def collect_long(client, experiment: str, parent_run_id: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    runs, notes = collect_runs(client, experiment, parent_run_id)
    return long_table(client, runs, experiment), notes


def collect_runs(client, experiment: str, parent_run_id: str | None = None) -> tuple[list, list[str]]:
    """The trial runs the report reads (``trial_runs``); none is the user's error."""
    runs, notes = trial_runs(client, find_experiment_id(client, experiment), parent_run_id)
    if not runs:
        where = f"children of run {parent_run_id}" if parent_run_id else f"experiment {experiment!r}"
        raise ReportError(f"no trial runs (runs tagged {', '.join(TRIAL_TAGS)}) in {where}")
    return runs, notes


def run_index(runs, experiment: str, tracking_uri: str) -> dict:
    """Which MLflow run each trial of the long table came from, and the grid launches (parent runs)
    that made them: kept beside the long CSV, every number stays traceable to its run after the
    store is gone."""
    trials = {}
    for run in sorted(runs, key=trial_name):
        trials[trial_name(run)] = {
            "run_id": run.info.run_id, "status": run.info.status,
            "parent_run": run.data.tags.get(PARENT_RUN_TAG)}
    parents = sorted({t["parent_run"] for t in trials.values() if t["parent_run"]})
    return {"mlflow_experiment": experiment, "tracking_uri": tracking_uri, "grid_parent_runs": parents,
            "trials": trials}


def long_table(client, runs, experiment: str) -> pd.DataFrame:
    """One row per (trial, generation, metric) of ``runs``, sorted."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:   # one request per metric
        rows = [row for run_rows_ in pool.map(lambda r: run_rows(client, r), runs) for row in run_rows_]
    if not rows:
        raise ReportError(f"the {len(runs)} trial runs of {experiment!r} have logged no metrics yet")
    long = pd.DataFrame(rows, columns=COLUMNS)
    return long.sort_values(COLUMNS[:8]).reset_index(drop=True)


def write_long_csv(long: pd.DataFrame, path: Path) -> None:
    long.to_csv(path, index=False, float_format="%.17g")   # round-trips every float exactly


def read_long_csv(path: Path) -> pd.DataFrame:
    """A long CSV as the report wrote it, checked: the columns, whole seeds and generations,
    numeric values (empty for a NaN logged as such). Anything else is named in one line."""
    try:
        long = pd.read_csv(path, dtype={column: str for column in COLUMNS[:8]})
    except (OSError, ValueError) as e:   # missing, unreadable, empty, not CSV, not text
        raise ReportError(f"{path}: cannot read it as a long CSV ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [c for c in COLUMNS if c not in long.columns]
    if missing:
        raise ReportError(f"{path}: missing columns {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    labels = long[COLUMNS[:6] + ["metric"]]
    for column, most in (("seed", MAX_SEED), ("generation", MAX_GENERATIONS)):
        # digits only, read as text: "1e30" or "True" is not a seed, and no number wraps round in int64
        whole = long[column].fillna("").str.fullmatch(r"\d{1,12}")
        bad = ~whole | (pd.to_numeric(long[column].where(whole), errors="coerce") > most)
        if bad.any():
            raise ReportError(f"{path}: column {column} must hold whole numbers from 0 to {most}; "
                              f"row {int(bad.idxmax()) + 2} holds {long[column][bad.idxmax()]!r}")
        long[column] = long[column].astype(int)
    values = pd.to_numeric(long["value"], errors="coerce")
    bad = values.isna() & long["value"].notna()
    if bad.any():
        raise ReportError(f"{path}: column value must hold numbers; row {int(bad.idxmax()) + 2} holds "
                          f"{long['value'][bad.idxmax()]!r}")
    if labels.isna().any().any():
        row = int(labels.isna().any(axis=1).idxmax())
        raise ReportError(f"{path}: row {row + 2} leaves a label empty ({', '.join(labels.columns)} are required)")
    twice = long.duplicated(list(TRIAL_TAGS) + ["generation", "metric"], keep=False)
    if twice.any():
        first, second = twice[twice].index[:2]   # rows are counted from 2: the header is row 1
        raise ReportError(f"{path}: rows {first + 2} and {second + 2} both give trial {long['trial'][first]}'s "
                          f"{long['metric'][first]} at generation {long['generation'][first]}; "
                          f"a long CSV holds one value per trial, generation and metric")
    long["value"] = values.astype(float)
    return long


def add_earlier_reports(long: pd.DataFrame, earlier: list[tuple[Path, pd.DataFrame]]
                        ) -> tuple[pd.DataFrame, list[str], dict]:
    """``long`` with the trials of earlier reports' long CSVs (``report --with``, each read by
    ``read_long_csv``): a study run in parts over several sittings, whose earlier stores are gone
    but whose long CSVs were kept. A trial is its TRIAL_TAGS (model, task, regime, seed, mitigation); one the
    store also holds keeps the store's rows. One that several files hold takes the copy that
    reaches the latest generation (a later part continued it); copies that reach the same one are
    refused as ambiguous unless they are equal. Returns (long, notes, {file: the trials added from it})."""
    key = list(TRIAL_TAGS)
    have = set(long.set_index(key).index)
    copies: dict[tuple, list[tuple[Path, pd.DataFrame]]] = {}
    for path, table in earlier:
        for trial_key, rows in table.groupby(key, sort=True):
            copies.setdefault(trial_key, []).append((path, rows[COLUMNS]))
    frames, notes = [long] if len(long) else [], []   # (concat warns about an empty frame)
    added: dict[str, list[str]] = {str(path): [] for path, _ in earlier}
    for trial_key, held in sorted(copies.items()):
        trial = held[0][1]["trial"].iloc[0]
        if trial_key in have:
            notes.append(f"trial {trial} is in the store and in {', '.join(str(p) for p, _ in held)}; "
                         f"the store's runs are used")
            continue
        path, rows = _latest_copy(trial, held)
        if len(held) > 1:
            notes.append(f"trial {trial} is in {', '.join(str(p) for p, _ in held)}; the rows of {path} "
                         f"(to generation {int(rows['generation'].max())}) are used")
        frames.append(rows)
        added[str(path)].append(trial)
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return merged.sort_values(COLUMNS[:8]).reset_index(drop=True), notes, {p: sorted(t) for p, t in added.items()}


def _latest_copy(trial: str, held: list[tuple[Path, pd.DataFrame]]) -> tuple[Path, pd.DataFrame]:
    """The one copy of a trial to report: the one reaching the latest generation; ReportError when
    two different copies reach it."""
    last = max(int(rows["generation"].max()) for _, rows in held)
    latest = [(path, rows) for path, rows in held if int(rows["generation"].max()) == last]
    path, rows = latest[0]
    ordered = rows.sort_values(COLUMNS[:8]).reset_index(drop=True)
    for other, other_rows in latest[1:]:
        if not ordered.equals(other_rows.sort_values(COLUMNS[:8]).reset_index(drop=True)):
            raise ReportError(f"--with {other}: trial {trial} is also in --with {path}, to the same generation "
                              f"({last}) with other values; give each trial once")
    return path, rows
