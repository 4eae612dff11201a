"""`collapse-ray report` end to end against a real `mlflow server`: a small grid's runs logged
through tracking.py (a parent run with nested trials, hand-chosen metric values), the report
run as a subprocess, and every number checked against the runs' metric histories read back
through MLflow's REST API."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from PIL import Image

from collapse_ray.tracking import GridRunTracker, TrialTracker
from tests.mlflow_server import serve_mlflow
from tests.report_checks import assert_table_matches_histories, histories_via_rest, read_csv, rest, run_report

EXPERIMENT = "report-study"
T975_DF1 = 12.7062047   # Student's t, two-sided 95%, one degree of freedom (printed tables)

# (regime, seed) -> metric -> values at generations 0, 1, 2. synthetic-only seed 2 stopped
# after generation 1 (a partial grid).
VALUES = {
    ("real-only", 0): {"pass_at_1": [0.5, 0.5, 0.5], "bleu4": [10.0, 10.5, 9.8], "drift/self_bleu": [40, 40, 41],
                       "train/loss": [3.0, 2.9, 2.8]},
    ("real-only", 1): {"pass_at_1": [0.5, 0.52, 0.49], "bleu4": [12.0, 11.0, 11.5], "drift/self_bleu": [42, 41, 42],
                       "train/loss": [3.1, 3.0, 2.9]},
    ("synthetic-only", 0): {"pass_at_1": [0.5, 0.4, 0.3], "bleu4": [0.0, 1.0, 2.0], "drift/self_bleu": [40, 42, 50],
                            "train/loss": [3.0, 2.0, 1.0]},
    ("synthetic-only", 1): {"pass_at_1": [0.5, 0.46, 0.4], "bleu4": [0.0, 0.5, 0.5], "drift/self_bleu": [40, 43, 52],
                            "train/loss": [3.1, 2.1, 1.1]},
    ("synthetic-only", 2): {"pass_at_1": [0.5, 0.44], "bleu4": [0.0, 0.2], "drift/self_bleu": [40, 41],
                            "train/loss": [3.2, 2.2]},
}
TABLE_METRICS = ("pass_at_1", "bleu4", "drift/self_bleu")   # codegen's headline metrics + a drift metric logged


def log_grid(uri: str, state_dir: Path) -> tuple[str, list[str]]:
    parent = GridRunTracker(uri, EXPERIMENT)
    parent_id = parent.start("report-study", {"grid": {"regimes": ["real-only", "synthetic-only"], "seeds": [0, 1, 2]},
                                              "base": {"generations": 2}}, state_dir)
    children = []
    for (regime, seed), metrics in VALUES.items():
        trial = TrialTracker(uri, EXPERIMENT)
        tags = {"model": "tiny", "task": "codegen", "regime": regime, "seed": str(seed), "mitigation": "none"}
        children.append(trial.start(f"tiny_codegen_{regime}_s{seed}_none", tags, parent_run_id=parent_id))
        for g in range(len(metrics["pass_at_1"])):
            trial.log_generation(g, {k: v[g] for k, v in metrics.items()})
        trial.finish()
    return parent_id, children


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: starting one takes a minute on a loaded machine."""
    with serve_mlflow(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="module")
def report(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    parent_id, children = log_grid(server, tmp / "grid-state")
    result = run_report(server, EXPERIMENT, tmp / "report", "--parent-run", parent_id)
    assert result.returncode == 0, result.stderr
    return {"uri": server, "parent": parent_id, "children": children, "out": tmp / "report", "result": result,
            "state": tmp / "grid-state"}


def test_report_end_to_end_against_an_mlflow_server(report):
    uri, parent_id, out = report["uri"], report["parent"], report["out"]
    assert "Traceback" not in report["result"].stderr + report["result"].stdout

    # Trials nest under one parent run, which holds the grid config and its launch tags.
    runs, values = histories_via_rest(uri, parent_id, EXPERIMENT, TABLE_METRICS)
    by_id = {r["info"]["run_id"]: r for r in runs}
    parents = {t["value"] for r in runs for t in r["data"].get("tags", []) if t["key"] == "mlflow.parentRunId"}
    assert parents == {parent_id} and set(report["children"]) <= set(by_id)
    assert sum(1 for r in runs if r["info"]["run_id"] != parent_id) == len(VALUES)
    parent_data = by_id[parent_id]["data"]
    assert {p["key"]: p["value"] for p in parent_data["params"]}["base.generations"] == "2"
    assert {"grid", "launch_time", "git_commit", "launch_id"} <= {t["key"] for t in parent_data["tags"]}

    # The figures exist and are images.
    figures = sorted((out / "figures").glob("*.png"))
    assert {p.name for p in figures} == {"overview.png", "curves_codegen_pass_at_1.png", "curves_codegen_bleu4.png",
                                         "curves_codegen_drift_self_bleu.png"}
    for path in figures:
        with Image.open(path) as image:
            image.verify()
            assert image.size[0] > 200 and image.size[1] > 200

    # Every number of the study table equals a mean / sd computed from the REST histories.
    table = read_csv(out / "table.csv")
    assert {(r["regime"], r["metric"], int(r["generation"])) for r in table} == {
        (regime, metric, g) for regime in ("real-only", "synthetic-only") for metric in TABLE_METRICS for g in (0, 2)}
    table_md = (out / "table.md").read_text()
    assert_table_matches_histories(out, values)
    assert "(n=2; -30.0%)" in table_md   # synthetic-only pass@1 at generation 2: 0.35 against 0.5

    # Onset, by hand: synthetic-only pass@1 means 0.5, 0.4333, 0.35 (-13%, -30%) -> generation 1;
    # real-only stays within 10%; bleu4 starts at 0 -> n/a; self-BLEU is past +10% only at the
    # last generation (40, 42, 51) -> none.
    onset = {(r["regime"], r["metric"]): r["onset"] for r in read_csv(out / "onset.csv")}
    assert onset[("synthetic-only", "pass_at_1")] == "1"
    assert onset[("real-only", "pass_at_1")] == "none"
    assert onset[("synthetic-only", "bleu4")] == "n/a"
    assert onset[("synthetic-only", "drift/self_bleu")] == "none"

    # Paired difference at generation 2, by hand: seeds 0 and 1 (seed 2 has no real-only partner).
    paired = {r["metric"]: r for r in read_csv(out / "paired.csv")}
    diffs = [0.3 - 0.5, 0.4 - 0.49]
    half = T975_DF1 * statistics.stdev(diffs) / math.sqrt(2)
    row = paired["pass_at_1"]
    assert (row["regime"], row["generation"], row["n"]) == ("synthetic-only", "2", "2")
    assert float(row["mean_diff"]) == pytest.approx(statistics.mean(diffs))
    assert float(row["ci_low"]) == pytest.approx(statistics.mean(diffs) - half, rel=1e-6)
    assert float(row["ci_high"]) == pytest.approx(statistics.mean(diffs) + half, rel=1e-6)

    # The long CSV holds every logged point (the `generation` marker aside).
    long = read_csv(out / "long.csv")
    assert len(long) == sum(len(series) for metrics in VALUES.values() for series in metrics.values())

    # report.md embeds every figure and the tables; the same files are artifacts of the parent run.
    report_md = (out / "report.md").read_text()
    assert all(f"](figures/{p.name})" in report_md for p in figures) and table_md in report_md
    listed = rest(uri, "artifacts/list", {"run_id": parent_id, "path": "report"})
    assert {"report/report.md", "report/long.csv", "report/table.csv", "report/figures"} <= \
        {f["path"] for f in listed["files"]}


def test_runs_json_names_each_trials_mlflow_run_and_its_grid_launch(report):
    runs, _ = histories_via_rest(report["uri"], report["parent"], EXPERIMENT, TABLE_METRICS)
    by_name = {r["info"]["run_name"]: r["info"] for r in runs if r["info"]["run_id"] != report["parent"]}
    index = json.loads((report["out"] / "runs.json").read_text())
    assert (index["mlflow_experiment"], index["grid_parent_runs"]) == (EXPERIMENT, [report["parent"]])
    assert index["trials"] == {name: {"run_id": info["run_id"], "status": info["status"],
                                      "parent_run": report["parent"]} for name, info in by_name.items()}
    # Every trial of the long CSV is named there.
    assert {row["trial"] for row in read_csv(report["out"] / "long.csv")} == set(index["trials"])


def test_a_resumed_grid_reopens_its_parent_run_and_its_trials_stay_nested(report):
    again = GridRunTracker(report["uri"], EXPERIMENT).start("report-study", {}, report["state"])
    assert again == report["parent"]
    trial = TrialTracker(report["uri"], EXPERIMENT)
    trial.start("ignored on resume", {}, run_id=report["children"][0], parent_run_id=again)
    run = rest(report["uri"], "runs/get", {"run_id": report["children"][0]})["run"]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.parentRunId"] == again
    assert run["info"]["status"] == "RUNNING"


def test_report_of_an_unknown_experiment_names_the_ones_there(report, tmp_path):
    result = run_report(report["uri"], "no-such-study", tmp_path / "out")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "experiment 'no-such-study' not found" in result.stderr and EXPERIMENT in result.stderr


HYBRID = {0: [0.5, 0.45, 0.42], 1: [0.5, 0.5, 0.47]}   # pass_at_1 of a later part's hybrid trials, gens 0..2


def test_a_later_part_reported_with_an_earlier_reports_long_csv(report, tmp_path):
    """A study in parts over sittings: part 2's store holds only hybrid trials; `--with` part 1's
    long.csv brings real-only and synthetic-only back, so the paired differences and a claim
    across the two parts are computed, and runs.json says where the earlier trials came from."""
    part2 = "report-study-part2"
    for seed, values in HYBRID.items():
        trial = TrialTracker(report["uri"], part2)
        trial.start(f"tiny_codegen_hybrid0.5_s{seed}_none", {"model": "tiny", "task": "codegen", "regime": "hybrid0.5",
                                                             "seed": str(seed), "mitigation": "none"})
        for g, value in enumerate(values):
            trial.log_generation(g, {"pass_at_1": value})
        trial.finish()
    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text("task: codegen\nmetric: pass_at_1\nclaims:\n"
                           "  - {id: c, claim: hybrid ends above synthetic-only, expect: above,\n"
                           "     terms: [{regime: hybrid0.5}, {regime: synthetic-only, sign: -1}]}\n")
    earlier = report["out"] / "long.csv"
    result = run_report(report["uri"], part2, tmp_path / "out", "--with", str(earlier), "--claims", str(claims_file))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout

    long = read_csv(tmp_path / "out" / "long.csv")
    assert {r["regime"] for r in long} == {"real-only", "synthetic-only", "hybrid0.5"}
    assert len(long) == len(read_csv(earlier)) + sum(len(v) for v in HYBRID.values())
    # hybrid - real-only at generation 2, paired on seeds 0 and 1: real-only from the earlier file.
    paired = {(r["regime"], r["metric"]): r for r in read_csv(tmp_path / "out" / "paired.csv")}
    diffs = [HYBRID[s][2] - VALUES[("real-only", s)]["pass_at_1"][2] for s in (0, 1)]
    assert float(paired[("hybrid0.5", "pass_at_1")]["mean_diff"]) == pytest.approx(statistics.mean(diffs))
    # The claim pairs hybrid (this store) with synthetic-only (the file) at generation 1, the last
    # all its cells reached (synthetic-only's seed 2 stopped there): 0.45-0.4, 0.5-0.46.
    claim = read_csv(tmp_path / "out" / "claims.csv")[0]
    assert claim["generation"] == "1"
    assert float(claim["mean"]) == pytest.approx(statistics.mean([0.45 - 0.4, 0.5 - 0.46]))
    index = json.loads((tmp_path / "out" / "runs.json").read_text())
    assert set(index["trials"]) == {f"tiny_codegen_hybrid0.5_s{s}_none" for s in HYBRID}
    assert index["from_earlier_reports"] == {
        str(earlier): sorted(f"tiny_codegen_{regime}_s{seed}_none" for regime, seed in VALUES)}
    assert f"with {len(VALUES)} trials from `{earlier}`" in (tmp_path / "out" / "report.md").read_text()

    # The store's own trials win over the same trials in a file, with a note; nothing is counted twice.
    again = run_report(report["uri"], EXPERIMENT, tmp_path / "again", "--with", str(earlier))
    assert again.returncode == 0, again.stderr
    assert read_csv(tmp_path / "again" / "long.csv") == read_csv(earlier)
    assert again.stdout.count("the store's runs are used") == len(VALUES)


def test_a_study_whose_stores_are_gone_is_reported_from_its_long_csvs_alone(tmp_path):
    """`--tracking-uri none`: the committed long CSVs are the whole input (no MLflow server)."""
    values = {("real-only", s): [0.5, 0.6 + 0.01 * s, 0.7] for s in range(3)} \
        | {("synthetic-only", s): [0.5, 0.3, 0.2 + 0.02 * s] for s in range(3)}
    rows = ["trial,model,task,regime,mitigation,seed,generation,metric,value"]
    rows += [f"tiny_codegen_{regime}_s{seed}_none,tiny,codegen,{regime},none,{seed},{g},pass_at_1,{v!r}"
             for (regime, seed), series in values.items() for g, v in enumerate(series)]
    csv_file = tmp_path / "kept_long.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text("task: codegen\nmetric: pass_at_1\nclaims:\n"
                           "  - {id: a, expect: below, terms: [{regime: synthetic-only}, {regime: real-only, sign: -1}]}\n")
    result = run_report("none", "kept", tmp_path / "out", "--with", str(csv_file), "--claims", str(claims_file))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    claim = read_csv(tmp_path / "out" / "claims.csv")[0]
    assert float(claim["mean"]) == pytest.approx(statistics.mean([0.2 + 0.02 * s - 0.7 for s in range(3)]))
    def cells(path):
        return sorted((r["trial"], r["generation"], float(r["value"])) for r in read_csv(path))

    assert cells(tmp_path / "out" / "long.csv") == cells(csv_file)
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert report_md.splitlines()[2].startswith("No MLflow store")
    assert "![overview](figures/overview.png)" in report_md   # the study in one figure, first
    assert report_md.index("overview.png") < report_md.index("curves_codegen_pass_at_1.png")
    assert json.loads((tmp_path / "out" / "runs.json").read_text())["trials"] == {}
    for extra, message in ((("--with", str(csv_file), "--parent-run", "abc"), "reads no MLflow store"),
                           ((), "reads no MLflow store")):
        refused = run_report("none", "kept", tmp_path / "again", *extra)
        assert refused.returncode != 0 and message in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it as a long CSV"),
    ("", "cannot read it as a long CSV"),
    ("trial,model\nx,y\n", "missing columns task, regime"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,zero,0,pass_at_1,0.5\n",
     "column seed must hold whole numbers"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,0,1.5,pass_at_1,0.5\n",
     "column generation must hold whole numbers"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,1e30,0,pass_at_1,0.5\n",
     "column seed must hold whole numbers from 0 to 2147483647; row 2 holds '1e30'"),   # pandas wrapped it to -2**63
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,True,0,pass_at_1,0.5\n",
     "column seed must hold whole numbers"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,0,101,pass_at_1,0.5\n",
     "column generation must hold whole numbers from 0 to 100"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,0,0,pass_at_1,0.5\n"
     "t,m,k,r,none,0,0,pass_at_1,0.7\n", "rows 2 and 3 both give trial t's pass_at_1 at generation 0"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,k,r,none,0,0,pass_at_1,high\n",
     "column value must hold numbers"),
    ("trial,model,task,regime,mitigation,seed,generation,metric,value\nt,m,,r,none,0,0,pass_at_1,0.5\n",
     "row 2 leaves a label empty"),
])
def test_a_bad_earlier_long_csv_is_one_line_before_the_store_is_read(report, tmp_path, content, message):
    path = tmp_path / "earlier.csv"
    if content is not None:
        path.write_text(content)
    result = run_report("http://127.0.0.1:9", EXPERIMENT, tmp_path / "out", "--with", str(path))   # no store there
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_trial_in_two_earlier_files_takes_the_longer_copy_and_different_copies_to_one_generation_are_refused(tmp_path):
    # A study in parts: part A ran the trial to generation 1, part B continued it to 2.
    header = "trial,model,task,regime,mitigation,seed,generation,metric,value\n"
    row = "t,tiny,codegen,synthetic-only,none,0,{g},pass_at_1,{v}\n"
    part_a, part_b, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "other.csv"
    part_a.write_text(header + row.format(g=0, v=0.5) + row.format(g=1, v=0.4))
    part_b.write_text(header + row.format(g=0, v=0.5) + row.format(g=1, v=0.4) + row.format(g=2, v=0.3))
    other.write_text(header + row.format(g=0, v=0.5) + row.format(g=1, v=0.1) + row.format(g=2, v=0.3))
    result = run_report("none", "kept", tmp_path / "out", "--with", str(part_b), "--with", str(part_a))
    assert result.returncode == 0, result.stderr
    assert f"the rows of {part_b} (to generation 2) are used" in result.stdout
    assert [(int(r["generation"]), float(r["value"])) for r in read_csv(tmp_path / "out" / "long.csv")] == \
        [(0, 0.5), (1, 0.4), (2, 0.3)]
    assert json.loads((tmp_path / "out" / "runs.json").read_text())["from_earlier_reports"] == \
        {str(part_b): ["t"], str(part_a): []}
    # The same trial to the same generation: equal copies are one, different ones are refused.
    assert run_report("none", "kept", tmp_path / "same", "--with", str(part_b), "--with", str(part_b)).returncode == 0
    result = run_report("none", "kept", tmp_path / "refused", "--with", str(part_b), "--with", str(other))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"--with {other}: trial t is also in --with {part_b}, to the same generation (2) with other values" \
        in result.stderr
