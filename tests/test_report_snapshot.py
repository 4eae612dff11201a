"""`collapse-ray report` on a sqlite store reads a copy taken at its start, so a grid writing to the
same file (holding its locks while it commits) cannot stall the report's many queries."""
from __future__ import annotations

import sqlite3

import pytest

from collapse_ray.report import build_report, collect

EXPERIMENT = "snapshot"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow sqlite store with two trial runs (real-only, synthetic-only) x generations 0..1."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=str(db.parent / "artifacts"))
    for regime, scores in (("real-only", (0.5, 0.6)), ("synthetic-only", (0.5, 0.3))):
        tags = {"model": "tiny", "task": "codegen_embedded", "regime": regime, "seed": "0", "mitigation": "none"}
        run = client.create_run(experiment_id, tags=tags, run_name=f"tiny_codegen_embedded_{regime}_s0_none")
        for generation, score in enumerate(scores):
            client.log_metric(run.info.run_id, "pass_at_1", score, step=generation)
            client.log_metric(run.info.run_id, "bleu4", 10 * score, step=generation)
        client.set_terminated(run.info.run_id)
    return db


def test_the_snapshot_reads_what_the_store_holds(store):
    uri = f"sqlite:///{store}"
    with collect.reading_client(uri) as client:
        from_copy, _ = collect.collect_long(client, EXPERIMENT)
    direct, _ = collect.collect_long(collect.open_client(uri), EXPERIMENT)
    assert len(from_copy) == 8 and from_copy.equals(direct)


def test_a_writer_that_locks_the_store_after_the_snapshot_does_not_stall_the_report(store, tmp_path, monkeypatch):
    """The live file is locked exclusively (as a writer's commit locks it) from the moment the copy
    is taken to the end of the report: reading the live file would wait out MLflow's 20 s busy
    timeout per query and then fail with 'database is locked'."""
    writer = sqlite3.connect(store, isolation_level=None)
    take_snapshot = collect.take_snapshot

    def snapshot_then_lock(db, into):
        take_snapshot(db, into)
        writer.execute("BEGIN EXCLUSIVE")

    monkeypatch.setattr(collect, "take_snapshot", snapshot_then_lock)
    try:
        files = build_report(EXPERIMENT, f"sqlite:///{store}", tmp_path / "report")
        assert writer.in_transaction   # the lock was held throughout
    finally:
        writer.close()
    long = collect.read_long_csv(files.out_dir / "long.csv")
    last = long[(long.metric == "pass_at_1") & (long.generation == 1)].set_index("regime")["value"]
    assert last.to_dict() == {"real-only": 0.6, "synthetic-only": 0.3}


def test_a_file_that_is_not_a_database_is_a_report_error(tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_text("not a database\n" * 100)
    with pytest.raises(collect.ReportError, match=f"{bad} is not a readable SQLite database"):
        with collect.reading_client(f"sqlite:///{bad}"):
            pass


def test_a_database_damaged_past_its_header_is_a_report_error(store, tmp_path):
    damaged = tmp_path / "mlflow.db"
    damaged.write_bytes(store.read_bytes()[:100] + b"\xff" * 4096)   # header kept, pages gone
    with pytest.raises(collect.ReportError, match=f"{damaged}"):
        with collect.reading_client(f"sqlite:///{damaged}") as client:
            collect.collect_long(client, EXPERIMENT)


def test_a_uri_with_a_query_string_names_the_same_file_as_the_preflight(store, monkeypatch):
    """``sqlite:///PATH?timeout=N`` is SQLAlchemy's form: the pre-flight checks PATH, so the report
    must read PATH too (it used to look for a file named 'mlflow.db?timeout=30'). The live file is
    only copied: MLflow never opens it for reading (its schema check would take locks there)."""
    opened = []
    build_client = collect.mlflow_client
    monkeypatch.setattr(collect, "mlflow_client", lambda uri, shown_as: opened.append(uri) or build_client(uri, shown_as))
    with collect.reading_client(f"sqlite:///{store}?timeout=30") as client:
        long, _ = collect.collect_long(client, EXPERIMENT)
    assert len(long) == 8
    assert len(opened) == 1 and str(store) not in opened[0]
