"""The ``collapse-ray`` command: parses arguments and delegates."""
from __future__ import annotations

import argparse
import os
import sys

import yaml


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects FIELD=VALUE (e.g. training.lr=1e-4), got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _load(args):
    from collapse_ray.config import ConfigError, ExperimentConfig, load_config

    try:
        return load_config(args.config, _overrides(args.set)) if args.config else ExperimentConfig().validate()
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None


def cmd_run(args) -> None:
    from collapse_ray.console import prepare_run_console
    from collapse_ray.loop import run_trial

    cfg = _load(args)
    prepare_run_console(cfg, args.verbose)
    metrics = run_trial(cfg)
    print(f"trial {cfg.name}: {len(metrics)} generations finished; MLflow: {cfg.tracking.uri} "
          f"(experiment {cfg.tracking.experiment!r})")


def cmd_validate(args) -> None:
    cfg = _load(args)
    print(f"{args.config}: valid ({cfg.task.name}, {cfg.regime.label()}, {cfg.generations} generations)")


def cmd_base_build(args) -> None:
    import dataclasses

    from collapse_ray.base_model import build_base_model

    cfg = _load(args)
    tiny = cfg.model.tiny
    if args.minutes is not None:
        tiny = dataclasses.replace(tiny, train_minutes=args.minutes)
    path = build_base_model(tiny, force=args.force)
    print(path)


def cmd_grid(args) -> None:
    from collapse_ray.grid import main as grid_main

    grid_main(args)


def cmd_report(args) -> None:
    from collapse_ray.report import ReportError, main as report_main

    try:
        report_main(args)
    except ReportError as e:
        raise SystemExit(f"report error: {e}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="collapse-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p, required=True):
        p.add_argument("config", nargs=None if required else "?", help="experiment YAML")
        p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a config field, e.g. --set generations=2")

    p = sub.add_parser("run", help="run (or resume) one trial in this process")
    with_config(p)
    p.add_argument("--verbose", action="store_true",
                   help="also print the libraries' progress bars and INFO lines, and Ray workers' output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a config without running anything")
    with_config(p)
    p.set_defaults(func=cmd_validate)

    base = sub.add_parser("base", help="the tiny base model trained here").add_subparsers(dest="base_command", required=True)
    p = base.add_parser("build", help="train (or reuse) the tiny base model")
    with_config(p, required=False)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--minutes", type=float, help="training budget (overrides model.tiny.train_minutes)")
    p.set_defaults(func=cmd_base_build)

    p = sub.add_parser("grid", help="run a grid of trials on Ray Tune")
    p.add_argument("config", help="grid YAML")
    p.add_argument("--dry-run", action="store_true", help="print the trials and their resources, run nothing")
    p.add_argument("--resume", action="store_true", help="continue an interrupted grid")
    p.add_argument("--verbose", action="store_true",
                   help="print Ray's, Tune's and the trials' output here instead of in the grid's log files")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("report", help="collapse curves, the study's table, paired differences and onset, "
                                      "from an MLflow experiment")
    p.add_argument("experiment", help="MLflow experiment name (a grid's is its name)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--out", help="output directory (default: reports/EXPERIMENT)")
    p.add_argument("--parent-run", metavar="RUN_ID",
                   help="only the trials of this grid launch (its parent run), and log the report to that run")
    p.add_argument("--onset-fraction", type=float, default=0.10,
                   help="collapse onset: change against generation 0 that counts (default 0.10)")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
