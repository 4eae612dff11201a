"""The ``collapse-ray`` command: parses arguments and delegates.

One error path: any of the project's own errors (errors.py) ends as one line on stderr,
``error: <where>: <what is wrong>; <what is allowed or what to do>``, exit code 2 (``--debug``
shows the traceback). SIGINT / SIGTERM stop a run cleanly with one line on how to resume.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

import yaml

from collapse_ray.errors import EXIT_CODE, CollapseRayError, ConfigError
from collapse_ray.path_rules import os_error_line

DEBUG_ENV = "COLLAPSE_RAY_DEBUG"


def parse_overrides(pairs: list[str]) -> dict:
    """``--set FIELD=VALUE`` pairs as {dotted field: value parsed as YAML}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair}: expected FIELD=VALUE; e.g. --set training.lr=1e-4")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {pair}: the value is not valid YAML ({getattr(e, 'problem', e)}); "
                              f"quote strings that contain ':' or '#'") from None
    return out


def _load(args, extra: dict | None = None):
    from collapse_ray.config import ExperimentConfig, config_from_dict, load_config

    overrides = {**parse_overrides(getattr(args, "set", [])), **(extra or {})}
    if getattr(args, "config", None):
        return load_config(args.config, overrides)
    if overrides:
        return config_from_dict(_nest(overrides))
    return ExperimentConfig().validate()


def _nest(dotted: dict) -> dict:
    from collapse_ray.config import set_dotted

    data: dict = {}
    for key, value in dotted.items():
        set_dotted(data, key, value)
    return data


def cmd_run(args) -> None:
    from collapse_ray.console import prepare_run_console
    from collapse_ray.interrupts import stop_on_signals

    cfg = _load(args)
    print(f"[{cfg.name}] config {args.config} loaded; importing the trial's code ...", file=sys.stderr, flush=True)
    prepare_run_console(cfg, args.verbose)
    with stop_on_signals():
        from collapse_ray.loop import run_trial
        from collapse_ray.trial_state import trial_dir

        args.trial_dir = trial_dir(cfg.output_dir, cfg.name)
        metrics = run_trial(cfg)
    print(f"trial {cfg.name}: {len(metrics)} generations finished; MLflow: {cfg.tracking.uri} "
          f"(experiment {cfg.tracking.experiment!r})")


def cmd_validate(args) -> None:
    from collapse_ray.preflight import preflight

    cfg = _load(args)
    preflight(cfg, say=lambda msg: print(f"[{cfg.name}] {msg}", flush=True))   # stderr: only an error
    print(f"{args.config}: valid ({cfg.task.name}, {cfg.regime.label()}, {cfg.generations} generations); "
          f"output_dir, tracking store, model and data checked as `run` checks them")


def cmd_base_build(args) -> None:
    from collapse_ray.base_model import build_base_model
    from collapse_ray.console import quiet_libraries

    quiet_libraries()   # its own progress lines, not transformers' "Writing model shards" bar

    overrides = {"model.tiny.train_minutes": args.minutes, "model.tiny.train_steps": args.steps}
    cfg = _load(args, {k: v for k, v in overrides.items() if v is not None} or None)
    path = build_base_model(cfg.model.tiny, force=args.force)
    print(path)


def cmd_grid(args) -> None:
    from collapse_ray.grid import main as grid_main
    from collapse_ray.interrupts import sigterm_as_sigint

    with sigterm_as_sigint():   # Tune's clean stop (state saved, trials stopped) for kill too
        grid_main(args)


def cmd_report(args) -> None:
    from collapse_ray.report import main as report_main

    report_main(args)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    parser = argparse.ArgumentParser(prog="collapse-ray", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p, required=True):
        p.add_argument("config", nargs=None if required else "?", help="experiment YAML")
        p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a config field, e.g. --set generations=2")

    p = sub.add_parser("run", help="run (or resume) one trial in this process", parents=[common])
    with_config(p)
    p.add_argument("--verbose", action="store_true",
                   help="also print the libraries' progress bars and INFO lines, and Ray workers' output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a config as `run` does before any compute (runs nothing)",
                       parents=[common])
    with_config(p)
    p.set_defaults(func=cmd_validate)

    base = sub.add_parser("base", help="the tiny base model trained here").add_subparsers(dest="base_command", required=True)
    p = base.add_parser("build", help="train (or reuse) the tiny base model", parents=[common])
    with_config(p, required=False)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--minutes", type=float, help="training budget (overrides model.tiny.train_minutes)")
    p.add_argument("--steps", type=int, help="exact step count (overrides model.tiny.train_steps)")
    p.set_defaults(func=cmd_base_build)

    p = sub.add_parser("grid", help="run a grid of trials on Ray Tune", parents=[common])
    p.add_argument("config", help="grid YAML")
    p.add_argument("--dry-run", action="store_true", help="print the trials, their resources and the plan, then run "
                   "the launch's pre-flight (config, directories, tracking, model, data, memory); start nothing")
    p.add_argument("--resume", action="store_true", help="continue an interrupted grid")
    p.add_argument("--verbose", action="store_true",
                   help="print Ray's, Tune's and the trials' output here instead of in the grid's log files")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("report", help="collapse curves, the study's table, paired differences and onset, "
                                      "from an MLflow experiment", parents=[common])
    p.add_argument("experiment", help="MLflow experiment name (a grid's is its name)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db); "
                        "'none': no store, only the trials of --with files")
    p.add_argument("--out", help="output directory (default: reports/EXPERIMENT)")
    p.add_argument("--claims", metavar="FILE", help="claims YAML to test (e.g. experiments/claims/study.yaml)")
    p.add_argument("--with", dest="earlier", action="append", default=[], metavar="LONG_CSV",
                   help="add the trials of an earlier report's long.csv (e.g. a study part whose store is gone; "
                        "repeatable); a trial the store also holds keeps the store's runs, one that several "
                        "files hold is taken from the file reaching the latest generation")
    p.add_argument("--parent-run", metavar="RUN_ID",
                   help="only the trials of this grid launch (its parent run), and log the report to that run")
    p.add_argument("--onset-fraction", type=float, default=0.10,
                   help="collapse onset: change against generation 0 that counts (default 0.10)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:   # this process is the command: it ends as soon as its work is done
        _exit_now(main(sys.argv[1:]))
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        args.func(args)
    except CollapseRayError as e:
        if debug:
            raise
        return _fail(e.one_line())
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM turned into one (interrupts.py)
        if debug:
            raise
        return _stopped(e, args, argv)
    except SystemExit as e:   # a message given to SystemExit is an error like any other
        if isinstance(e.code, str) and not debug:
            return _fail(" ".join(e.code.split()))
        raise
    except OSError as e:   # the OS refused a path no check foresaw (path_rules.py): the user's to fix
        line = os_error_line(e)
        if line is None or debug:
            raise
        return _fail(line)
    return 0


def _exit_now(code: int) -> None:
    """Run the exit handlers, then end without Python's finalization: its full garbage collections
    over the millions of objects a trial leaves take ~10 s under load (seen with gdb in
    finalize_modules), too long for a stop that must end within seconds."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_CODE


def _stopped(e: KeyboardInterrupt, args, argv: list[str]) -> int:
    import signal

    from collapse_ray.interrupts import signal_of

    signum = signal_of(e)
    again = "collapse-ray " + shlex.join(argv + (["--resume"] if args.command == "grid" and not args.resume else []))
    trial_dir = getattr(args, "trial_dir", None)
    what = "nothing had started"
    if args.command == "grid":
        what = "Tune keeps the grid's state and each trial its finished generations"
    elif trial_dir is not None and (trial_dir / "trial.json").is_file():
        kept = len(list(trial_dir.glob("gen_*/COMPLETE.json")))
        what = f"{kept} finished generation(s) kept in {trial_dir}, its MLflow run marked KILLED"
    print(f"stopped by {signal.Signals(signum).name}: {what}; resume with: {again}", file=sys.stderr, flush=True)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
