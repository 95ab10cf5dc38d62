"""`python -m tune.run`: run a search space as one Ray Tune experiment.

    python -m tune.run --space ablation                 # report E's ablation, budget chosen for this machine
    python -m tune.run --space ablation --dry-run       # the trials, a data check and the estimated time
    python -m tune.run --space my_space.yaml --budget full --gpus-per-trial 0.25
    python -m tune.run --space ablation --until-decided    # more seeds, wave by wave, until the claims are decided
    python -m tune.run --space ablation --name NAME --resume
    python -m tune.run --space search --search optuna --num-samples 40 --address ray://head:10001

The flags become a `Plan` (what runs) and `RunOptions` (how and where) for `tune.run_experiment`;
this module keeps the defaults that depend on the command line, the one-line errors (exit 2), the
question before a large plan (--yes), and the summary at the end (exit 1 when trials errored; 130
after Ctrl-C and 143 after SIGTERM, with the command that resumes).
"""
from __future__ import annotations

import argparse
import os
import sys

from cnnsearch.cli import DATA_DIR_HELP, ArgumentParser, Interrupt, fail, redact, stop_on_signals

__all__ = ["main", "build_parser"]

PROG = "python -m tune.run"
ASK_ABOVE = 1_000  # seed runs: a larger plan runs only with --yes


def build_parser() -> ArgumentParser:
    from search_spaces import BUDGETS, DEFAULT_SCHEDULER, SCHEDULERS, SETTINGS

    from .options import FUSE, LOGGERS, PROGRESS, RunOptions
    from search_spaces.plan import SEARCHES

    p = ArgumentParser(prog=PROG, description="Run a cnnsearch search space as a Ray Tune experiment (ASHA, fractional GPUs, seeds).")
    g = p.add_argument_group("what to run")
    g.add_argument("--space", required=True, help="a shipped space (ablation, architectures, optimizers, search) or a path to a YAML file")
    g.add_argument("--dataset", help="override the space's data set: cifar10, cifar100, mnist or imagefolder:PATH")
    g.add_argument("--data-dir", help=DATA_DIR_HELP)
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    g.add_argument("--budget", default="auto", choices=("auto", *BUDGETS), help="auto: full with a GPU, cpu without")
    g.add_argument("--dry-run", action="store_true", help="print the trials, check the data, estimate the time, and exit")
    g.add_argument("--yes", action="store_true", help=f"run a plan of more than {ASK_ABOVE:,} seed runs without asking")
    g = p.add_argument_group("search")
    g.add_argument("--scheduler", choices=tuple(SCHEDULERS),
                   help="; ".join(f"{s.name} {s.about}" for s in SCHEDULERS.values()) +
                   f" (default: the space's `scheduler`, else {DEFAULT_SCHEDULER}; fifo for the spaces that check claims)")
    g.add_argument("--search", choices=SEARCHES, help="default: grid for grid/one-at-a-time spaces, random for sampled ones")
    g.add_argument("--num-samples", type=int, help="draws for sampled spaces (default: the space's num_samples)")
    for setting in SETTINGS.values():
        takers = " and ".join(s.title for s in SCHEDULERS.values() if setting.name in s.keys)
        g.add_argument(setting.flag, type=int, help=f"{takers}: {setting.help}")
    g.add_argument("--seed", type=int, help="sampled spaces: training seed of every trial (and the searcher's seed)")
    g = p.add_argument_group("seeds")
    g.add_argument("--until-decided", action="store_true",
                   help="adaptive replication: after the plan's trials (wave 1), judge the claims and give more seeds to "
                        "the points of undecided ones, wave after wave, until each is decided or hopeless")
    g.add_argument("--max-seeds", type=int, help="with --until-decided: the most seeds a point gets (default: 4 x the "
                                                 "space's seeds)")
    g.add_argument("--fuse", choices=FUSE, default=RunOptions.fuse,
                   help="a trial's seeds as one stacked network (on), one after another (off), or fused where the trial "
                        "has a GPU (auto: on a CPU fusing does not pay)")
    g = p.add_argument_group("resources")
    g.add_argument("--cpus-per-trial", type=float, default=RunOptions.cpus_per_trial)
    g.add_argument("--gpus-per-trial", type=float,
                   help="fractions share a GPU, e.g. 0.25 (default with GPUs: 0.25 with --mps or eager steps, "
                        "else 1; 0 without GPUs)")
    g.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as resources allow)")
    g.add_argument("--num-gpus", type=float, help="logical GPUs for a local cluster (lets CPU machines exercise fractional packing)")
    g.add_argument("--num-cpus", type=int, help="CPUs for a local cluster (default: all)")
    g.add_argument("--mps", action="store_true",
                   help="run NVIDIA MPS while the experiment runs, so trials sharing a GPU run at once (local clusters)")
    g.add_argument("--address", help="an existing Ray cluster, e.g. auto or ray://HEAD:10001")
    g = p.add_argument_group("results")
    g.add_argument("--storage", default=RunOptions.storage,
                   help=f"a local folder or a pyarrow filesystem URI (s3://, gs://, ...); default ./{RunOptions.storage}")
    g.add_argument("--name", help="experiment name (default: SPACE-BUDGET-TIME); with --resume, the one to finish")
    g.add_argument("--resume", action="store_true", help="finish an interrupted experiment (--name) without re-running finished trials")
    g.add_argument("--max-failures", type=int, default=RunOptions.max_failures,
                   help="retries of a crashed trial from its last checkpoint")
    g = p.add_argument_group("watching")
    g.add_argument("--progress", default=RunOptions.progress, choices=PROGRESS,
                   help="line: a line when something changed (default); table: Tune's table every 30 s")
    g.add_argument("--log-to", action="append", choices=LOGGERS, default=[],
                   help="also log every trial to MLflow (a SQLite database in --storage, or $MLFLOW_TRACKING_URI); "
                        "TensorBoard files are always written")
    g = p.add_argument_group("dashboard")
    g.add_argument("--dashboard-host", default=RunOptions.dashboard_host,
                   help="0.0.0.0 exposes it to the network (with its token)")
    g.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard (local clusters)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        with stop_on_signals():
            return _main(argv)
    except Interrupt as stop:  # before the experiment started (loading the space, probing GPUs)
        print(f"{PROG}: interrupted ({stop.how}) before the experiment started; nothing was run", file=sys.stderr)
        return stop.code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    from search_spaces import SETTINGS, SpaceError, load_space

    from .options import RunError, RunOptions
    from search_spaces.plan import Plan

    try:
        options = RunOptions(
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
            max_failures=args.max_failures, num_cpus=args.num_cpus, num_gpus=args.num_gpus, address=args.address,
            dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host, mps=args.mps, fuse=args.fuse,
            storage=args.storage, name=args.name, progress=args.progress, log_to=tuple(dict.fromkeys(args.log_to)),
            resume=args.resume, data_dir=args.data_dir, download=not args.no_download,
            command=redact(" ".join([PROG, *argv])))
        space = load_space(args.space)
        gpus_here = _gpus_available(args)
        budget = args.budget if args.budget != "auto" else ("full" if gpus_here else "cpu")
        plan = Plan(space=space, budget=budget, search=args.search, scheduler=args.scheduler,
                    num_samples=args.num_samples, dataset=args.dataset, seed=args.seed,
                    settings={k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None},
                    until_decided=args.until_decided, max_seeds=args.max_seeds)
    except (RunError, SpaceError) as exc:
        fail(str(exc), prog=PROG)
    if args.budget == "auto":
        print(f"budget: {budget} (auto: {'a GPU is' if gpus_here else 'no GPU is'} available; --budget to choose)")

    if args.dry_run:
        return _dry_run(plan, options, args)
    if plan.max_runs > ASK_ABOVE and not args.yes and not args.resume:
        fail(f"this plan runs {plan.max_runs:,} seed runs of up to {plan.epochs} epochs ({plan.max_runs * plan.epochs:,} "
             f"epochs at most); pass --yes to run it, or --dry-run to list them", prog=PROG)

    from .experiment import Interrupted, run_experiment

    try:
        result = run_experiment(plan, options)
    except RunError as exc:
        fail(str(exc), prog=PROG)
    except Interrupted as stop:
        return _interrupted(stop, argv, plan)
    return _summary(result, plan, args, argv)


def _resume_command(argv: list[str], budget: str, name: str) -> str:
    """The command that finishes this experiment: the same flags, at the budget it ran, under its name."""
    keep, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in ("--budget", "--name"):
            skip = 1
        elif not arg.startswith(("--budget=", "--name=")) and arg not in ("--resume", "--yes"):
            keep.append(arg)
    return redact(" ".join([PROG, *keep, "--budget", budget, "--name", name, "--resume"]))


def _interrupted(stop, argv: list[str], plan) -> int:
    """One line: how far it got and how to finish it. Exit 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM."""
    how = Interrupt(stop.signum).how
    if stop.resumable:
        then = (f"{stop.finished} of {stop.trials} trials finished; finish it with: "
                f"{_resume_command(argv, plan.budget, os.path.basename(stop.path))}")
    else:
        then = "no trial had started, so there is nothing to resume"
    print(f"\n{PROG}: interrupted ({how}): {then}", file=sys.stderr)
    return 128 + stop.signum


def _dry_run(plan, options, args: argparse.Namespace) -> int:
    """The trials, whether the data is there (unpacked or found, never decoded or downloaded), and how
    long the run should take on this machine (or on the --num-cpus/--num-gpus it declares)."""
    import torch

    from cnnsearch.data import DataError, find_dataset

    from search_spaces.estimate import estimate_line

    print("\n".join(plan.describe()))
    try:
        print(f"data: {find_dataset(plan.dataset_name, data_dir=args.data_dir, download=not args.no_download)}")
    except DataError as exc:
        fail(str(exc), prog=PROG)
    cluster = {"CPU": args.num_cpus or os.cpu_count() or 1,
               "GPU": args.num_gpus if args.num_gpus is not None else torch.cuda.device_count()}
    print(estimate_line(plan, options, cluster))
    return 0


def _summary(result, plan, args: argparse.Namespace, argv: list[str]) -> int:
    """The last lines of a run: the best trial, the count, where the results are and what to run next."""
    print()
    if result.best is not None:
        best = result.best
        at = f" (its best epoch, {best.epoch} of {best.epochs}; last epoch {best.last:.4f})" \
            if best.epoch is not None else ""
        print(f"best trial: {best.metric} {best.value:.4f}, its seeds' mean{at}; config differs from the base in "
              f"{best.changes or 'nothing'}")
    print(f"{result.trials} trials, {result.errors} errored; results in {result.path}")
    if result.stopped:
        print(f"seeds: stopped adding them: {result.stopped}")
    print(f"next: python -m analysis report {result.path}")
    if result.errors:
        print(f"some trials errored; `{_resume_command(argv, plan.budget, os.path.basename(result.path))}` retries them",
              file=sys.stderr)
    return 1 if result.errors else 0


def _gpus_available(args: argparse.Namespace) -> bool:
    """Whether trials can have GPUs: an existing cluster's (connecting to it, unless this is a dry
    run; one without token authentication is refused), declared logical GPUs, or real ones here."""
    from .options import RunError

    if args.address and not args.dry_run:
        from .cluster import connect  # before anything imports Ray: it reads RAY_AUTH_MODE once, at import

        try:
            connect(args.address)
        except RunError as exc:
            fail(str(exc), prog=PROG)
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    if args.num_gpus is not None:
        return args.num_gpus > 0
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
