"""The dry-run's report: every trial with what it keeps, the totals, the plan, and the estimates
of disk, wall time and GPU-hours (grid/estimate.py), with what earlier launches finished on disk.
No Ray."""
from __future__ import annotations

import dataclasses

from collapse_ray.backends import add_resources
from collapse_ray.config import ConfigError
import collapse_ray.grid.estimate as est   # the module, not the package (whose __init__ imports this one)
from collapse_ray.grid.expand import Trial
from collapse_ray.grid.plan import Plan, fmt_resources, memory_bound, plan
from collapse_ray.grid.spec import GridConfig


def _one_or_each(values: list[str]) -> str:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "per trial: " + ", ".join(distinct)


def finished_on_disk(trials: list[Trial]) -> list[Trial]:
    """The trials with generations finished on disk (a launch resumes them), each cut to those:
    generations 0..n-1."""
    from collapse_ray.trial_state import TrialState, trial_dir

    done = []
    for t in trials:
        n = len(TrialState.read(trial_dir(t.config.output_dir, t.config.name)).finished())
        if n:
            done.append(dataclasses.replace(t, config=dataclasses.replace(t.config, generations=n - 1)))
    return done


def describe(grid: GridConfig, trials: list[Trial], p: Plan, missing_tasks: list[str],
             gpus_per_node: float | None = None, costs: est.PhaseCosts | est.CostTable | None = None,
             done: list[Trial] = ()) -> str:
    """The dry-run's report. ``costs``: measured phase costs for CPU trials (est.load_costs; None:
    no time estimate for them). ``done``: finished_on_disk(trials)."""
    finished = {t.name: t.config.generations for t in done}
    generations = sorted({t.config.generations for t in trials})
    each = (f"{generations[0] + 1} generations each (0..{generations[0]})" if len(generations) == 1 else
            f"{generations[0]}..{generations[-1]} generations after generation 0, per trial below")
    mlflow = _one_or_each([f"{t.config.tracking.uri} experiment {t.config.tracking.experiment!r}" for t in trials])
    lines = [
        f"grid {grid.name}: {len(trials)} trials = {len(grid.models)} models x {len(grid.tasks)} tasks x "
        f"{len(grid.regimes)} regimes x {len(grid.seeds)} seeds x {len(grid.mitigations)} mitigations, {each}",
        f"MLflow: {mlflow}; trial state: {_one_or_each([t.config.output_dir for t in trials])}",
    ]
    if missing_tasks:
        lines.append(f"note: task(s) {', '.join(missing_tasks)} cannot be loaded in this install; "
                     f"planned anyway, a real run will refuse them")
    rows = [("trial", "generations", "driver", "generator", "training")]
    for t in trials:
        r = t.resources
        if r.generator is None:
            gen = "HF generate in the driver"
        elif r.colocated:
            gen = f"vLLM {fmt_resources(r.generator)} (TP {r.tensor_parallel}, on the Train GPUs)"
        else:
            gen = f"vLLM {fmt_resources(add_resources(r.generator, {'GPU': float(r.tp_gpus)}))} (TP {r.tensor_parallel})"
        if r.train_workers:
            zero = f" ZeRO-{r.zero_stage}" if r.strategy == "deepspeed" and r.zero_stage is not None else ""
            train = f"Ray Train {r.train_workers} x ({fmt_resources(r.per_worker)}) {r.strategy}{zero}"
        else:
            train = "in the driver process"
        rows.append((t.name, _generations(t, finished.get(t.name)), fmt_resources(r.driver), gen, train))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines += [""] + ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)) + f"  {row[-1]}" for row in rows]

    lines += ["", "per model, one trial keeps for its whole life (driver + vLLM, and its Ray Train worker group):"]
    width = max(len(t.labels.model) for t in trials)
    for label in dict.fromkeys(t.labels.model for t in trials):
        t = next(x for x in trials if x.labels.model == label)
        n = sum(x.labels.model == label for x in trials)
        trains = fmt_resources(t.resources.training()) if t.resources.train_workers else "the driver's CPU"
        lines.append(f"  {label:<{width}} {n:>4} trials  holds {fmt_resources(t.resources.held()):<20}  "
                     f"Train group {trains}")
    needs = [t.resources.reserved() for t in trials]
    peak = {k: max(need.get(k, 0.0) for need in needs) for k in ("CPU", "GPU")}
    summed = add_resources(*needs)
    lines += [
        "",
        f"totals: {len(trials)} trials; one trial needs at most {peak['CPU']:g} CPUs and {peak['GPU']:g} GPUs; "
        f"summed over all trials {summed.get('CPU', 0):g} CPUs and {summed.get('GPU', 0):g} GPUs",
        f"cluster ({p.cluster_source}): {p.cluster.get('CPU', 0):g} CPUs, {p.cluster.get('GPU', 0):g} GPUs "
        f"-> max_concurrent_trials = {p.concurrency} ({p.reason})",
    ]
    if done:
        complete = sum(finished.get(t.name, -1) >= t.config.generations for t in trials)
        lines.append(f"on disk: {complete} trial(s) finished, {len(done) - complete} resume at a later generation "
                     f"(the launch resumes each at its first unfinished generation)")
    return "\n".join(lines + [""] + estimates(grid, trials, p, gpus_per_node, costs, done))


def _generations(t: Trial, finished: int | None) -> str:
    if finished is None:
        return f"0..{t.config.generations}"
    if finished >= t.config.generations:
        return f"0..{t.config.generations} done"
    return f"0..{t.config.generations}, resumes at {finished + 1}"


def estimates(grid: GridConfig, trials: list[Trial], p: Plan, gpus_per_node: float | None,
              costs: est.PhaseCosts | est.CostTable | None, done: list[Trial] = ()) -> list[str]:
    """Disk, wall time and GPU-hours (grid/estimate.py), per model and task and for the grid."""
    lines = ["estimates (approximate; docs/grid.md, \"Estimates\"):"]
    known = [(t, e) for t in trials if (e := est.estimate_trial(t, costs)) is not None]
    unknown = sorted({t.config.model.name_or_path for t in trials} - {t.config.model.name_or_path for t, _ in known})
    if unknown:
        lines.append(f"  no estimate for {', '.join(unknown)}: size unknown (a hub id outside "
                     f"collapse_ray/model_size.py's table; give a local directory with config.json)")
    if not known:
        return lines
    width = max(len(t.labels.model) for t, _ in known)
    for label in dict.fromkeys(t.labels.model for t, _ in known):
        group = [(t, e) for t, e in known if t.labels.model == label]
        t, e = group[0]
        kind = "LoRA adapter" if t.config.training.method == "lora" else ("bf16" if e.on_gpu else "float32")
        lines.append(f"  {label:<{width}} {est.fmt_count(e.size.n_params)} params ({e.size.source}); per trial: "
                     f"{est.fmt_bytes(e.disk.model_bytes)} per model ({kind}), disk peak "
                     f"{est.fmt_bytes(e.disk.peak_bytes)}, final {est.fmt_bytes(e.disk.final_bytes)}")
        # Measured costs differ per task; tasks with the same figures share a line.
        times: dict[str, list[str]] = {}
        for task in dict.fromkeys(x.config.task.name for x, _ in group):
            t, e = next((x, y) for x, y in group if x.config.task.name == task)
            if e.phase_seconds is not None:
                per_gen = " + ".join(f"{k} {est.fmt_seconds(v)}" for k, v in e.phase_seconds.items())
                times.setdefault(f"per generation {per_gen}; ~{est.fmt_seconds(e.seconds(t.config.generations))} "
                                 f"per trial of generations 0..{t.config.generations} (approximate; {_source(e)})",
                                 []).append(task)
        lines += [f"    {', '.join(tasks)}: {line}" for line, tasks in times.items()]
    peak, final = est.grid_disk([e for _, e in known], p.concurrency)
    lines.append(f"  disk for the grid: peak {est.fmt_bytes(peak)} with {p.concurrency} trial(s) at once, "
                 f"{est.fmt_bytes(final)} once all have finished (retention as configured; synthetic data kept)")

    timed = [(t, e) for t, e in known if e.phase_seconds is not None]
    on_gpu = any(e.on_gpu for _, e in known)
    untimed = sorted({t.config.task.name for t, e in known if e.phase_seconds is None})
    if untimed:
        lines.append(f"  no time for CPU trials of {', '.join(untimed)}: neither benchmarks/compute_floor.json "
                     f"nor benchmarks/phase_costs.json has costs for them")
    if on_gpu:
        lines.append(f"  GPU trials' time: throughput model ({est.TRAIN_MFU:.0%} MFU training, {est.GENERATE_MFU:.0%} "
                     f"decoding, {est.PEAK_FLOPS / 1e12:g} TFLOP/s bf16 per GPU, weights saved and loaded at "
                     f"{est.SYNC_BYTES_PER_S / 1e9:g} GB/s)")
    if not timed:
        return lines
    launch = {t.name: i for i, t in enumerate(est.start_order(trials, costs, p.concurrency, p.cluster.get("CPU", 0.0)))}
    in_launch_order = sorted(timed, key=lambda te: launch[te[0].name])
    lines += _wall_lines(in_launch_order, p, on_gpu, done, configured=timed if in_launch_order != timed else None)
    if on_gpu:
        lines += _gpu_hours(trials, timed, p, gpus_per_node)
    return lines


def _source(e: est.TrialEstimate) -> str:
    return "GPU throughput model" if e.on_gpu else f"{e.costs.source}, scaled by the trial's work"


def _wall_lines(timed: list[tuple[Trial, est.TrialEstimate]], p: Plan, on_gpu: bool,
                done: list[Trial] = (), configured: list[tuple[Trial, est.TrialEstimate]] | None = None) -> list[str]:
    """The grid's wall time, ``timed`` in the order the launch starts them (``configured``: the
    same in the config's order, where that differs). CPU trials' generation 0 counts once per
    generation-0 key, and their schedule leaves cores idle while trials wait for it; GPU trials
    waiting for it hold their GPUs, so theirs counts in full. With ``done`` (finished_on_disk),
    CPU trials' floor of what is left."""
    alone = [e.seconds(t.config.generations) for t, e in timed]
    cpus = p.cluster.get("CPU", 0.0)
    if on_gpu:
        wall = est.gpu_grid_wall_seconds(alone, p.concurrency)
        return [f"  grid wall time ~ {est.fmt_seconds(wall)} (approximate; GPU throughput model; {len(timed)} trials, "
                f"{est.fmt_seconds(sum(alone))} summed, {p.concurrency} at once)"]
    works = [(t.config, e.phase_seconds) for t, e in timed]
    seconds = est.with_shared_generation0(works)
    widest = est.widest_costs([e for _, e in timed])
    schedule = est.cpu_grid_schedule(works, p.concurrency, cpus, widest)
    floor = sum(seconds) * widest.cores / cpus
    if configured:
        as_configured = est.cpu_grid_schedule([(t.config, e.phase_seconds) for t, e in configured], p.concurrency,
                                              cpus, widest)
        started = (f"started in the order whose schedule ends soonest, each generation-0 key's trials together "
                   f"(the config's order: ~{est.fmt_seconds(as_configured.wall_s)})")
    else:
        started = "started in the grid's order"
    wall = est.expected_wall_s(schedule, p.concurrency, cpus)
    beyond = (f" and {wall / schedule.wall_s - 1:.0%} for the {p.concurrency - cpus:g} trial(s) at once beyond the "
              f"CPUs (their processes, measured)" if wall > schedule.wall_s else "")
    keys = len({est.generation0_key_of(t.config) for t, _ in timed})
    sources = ", ".join(dict.fromkeys(e.costs.source.split(" (")[0] for _, e in timed))
    lines = [f"  grid wall time ~ {est.fmt_seconds(wall)} (approximate; from {sources}; {len(timed)} "
            f"trials, {est.fmt_seconds(sum(seconds))} summed, generation 0 trained and evaluated once for each of "
            f"its {keys} key(s) ({est.fmt_seconds(sum(alone) - sum(seconds))} less); {started}, "
            f"{p.concurrency} at once on {cpus:g} CPUs, {widest.cores:g} core(s) a trial: the compute floor "
            f"{est.fmt_seconds(floor)} and {schedule.idle_share:.0%} of the cores idle while trials wait for a "
            f"shared generation 0 or too few are left{beyond}); Ray and start-ups come on top (measured "
            f"ratios: docs/BENCHMARKS.md)"]
    more = est.cpu_grid_schedule(works, p.concurrency + 1, cpus, widest)
    more_wall = est.expected_wall_s(more, p.concurrency + 1, cpus)
    memory = memory_bound([t for t, _ in timed], p.cluster, p.cluster_source)[0]
    fits = memory is None or memory[0] > p.concurrency
    if p.concurrency < len(timed) and fits and more_wall < 0.95 * wall:
        lines.append(f"  {p.concurrency + 1} trials at once would take ~{est.fmt_seconds(more_wall)} "
                     f"({more.idle_share:.0%} idle; tune.max_concurrent_trials {p.concurrency + 1}, with resources "
                     f"that let {p.concurrency + 1} trials fit)")
    if done:   # the floor less what is on disk, generation 0 once per key on both sides
        per_generation = {t.name: e.phase_seconds for t, e in timed}
        on_disk = est.with_shared_generation0([(d.config, per_generation[d.name]) for d in done
                                               if d.name in per_generation])
        left = floor - sum(on_disk) * widest.cores / cpus
        lines.append(f"  left to compute: ~{est.fmt_seconds(left)} of the whole grid's compute floor "
                     f"{est.fmt_seconds(floor)} (generations finished on disk are not run again)")
    return lines


def _gpu_hours(trials: list[Trial], timed: list[tuple[Trial, est.TrialEstimate]], p: Plan,
               gpus_per_node: float | None) -> list[str]:
    """GPU-hours and wall time with vLLM colocated on the training GPUs vs on GPUs of its own."""
    seconds = [(t, e.seconds(t.config.generations)) for t, e in timed]

    def hours(separate: bool) -> float:
        return sum(s * (t.resources.separate() if separate else t.resources).reserved().get("GPU", 0.0)
                   for t, s in seconds) / 3600

    if not any(t.resources.colocated for t in trials):
        return [f"  GPU-hours ~ {hours(False):.1f} (vLLM on GPUs of its own: resources.colocate is false)"]
    total = sum(s for _, s in seconds)
    lines = [f"  GPU colocated (vLLM sleeps on the Train GPUs): max_concurrent_trials {p.concurrency}, "
             f"wall ~ {total / p.concurrency / 3600:.3g} h, {hours(False):.1f} GPU-hours"]
    separate = [dataclasses.replace(t, resources=t.resources.separate()) for t in trials]
    try:
        sp = plan(separate, p.cluster, p.cluster_source, None, gpus_per_node)
    except ConfigError as e:
        return lines + [f"  GPU separate (resources.colocate: false): does not fit ({e})"]
    # Separate serving GPUs wait through every training phase of their trial.
    idle = sum((t.config.generations + 1) * e.phase_seconds["train"] * t.resources.serving_gpus()
               for t, e in timed if t.resources.colocated) / 3600
    lines.append(f"  GPU separate (resources.colocate: false): max_concurrent_trials {sp.concurrency}, "
                 f"wall ~ {total / sp.concurrency / 3600:.3g} h, {hours(True):.1f} GPU-hours ({idle:.1f} of "
                 f"them serving GPUs idle while their trial trains)")
    return lines
