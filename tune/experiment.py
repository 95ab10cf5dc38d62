"""Run (or resume) the experiment a `Plan` describes, on a local or existing Ray cluster.

    from search_spaces import load_space
    from tune import Plan, RunOptions, run_experiment

    result = run_experiment(Plan(load_space("ablation"), "smoke"), RunOptions(storage="runs", name="abl"))
    result.path, result.trials, result.errors, result.best     # then analysis.load_experiment(result.path)

A trial is a design point with its seeds (tune/trainable.py). The plan's trials are one Tune run; with
`--until-decided` that is wave 1, and after each wave `analysis.adaptive` judges the claims and names the
points that get more seeds in the next wave. What ran is kept in the project's own JSON, never read back
from Tune's pickles: the record (`cnnsearch.json`), each seed's folder, and the ledger (`groups.json`: every
trial's folder, wave, seeds and how it ended, and each wave's look at the claims). `--resume` rebuilds the
plan from them: finished trials are kept, unfinished ones continue from their seeds' checkpoints, an Optuna
study reopens from its SQLite file; a scheduler starts afresh, so ASHA's stops may differ from an
uninterrupted run's.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune as ray_tune

from cnnsearch.cli import redact
from search_spaces import (LEDGER_FILE, ExperimentRecord, Ledger, Provenance, RecordError, SpaceError, best_of,
                           locate_folder, trial_config)
from search_spaces.estimate import concurrency
from search_spaces.plan import Plan, group_folder
from search_spaces.seeds import seed_means

from .cluster import MPSError, claim_folder, mps_daemon, start_ray
from .console import Interrupted, StopOnSignal, environ, mlflow_logger, print_plan, reporter, watch_lines
from .options import RunError, RunOptions
from .trainable import train_group
from .trials import TrialList, param_space, sampled_searcher

__all__ = ["run_experiment", "RunResult", "BestTrial", "Interrupted", "LEDGER_FILE"]

OPTUNA_DB = "optuna.db"  # in the experiment folder, for optuna-dashboard


@dataclass(frozen=True)
class BestTrial:
    """The best trial (a point, its seeds' mean) at its best epoch: `value` of `metric` at `epoch`, and at its
    last epoch, its flat config (of its first seed), and the keys that differ from the plan's base config."""

    metric: str
    value: float
    config: Mapping[str, Any]
    changes: Mapping[str, Any]
    epoch: int | None = None  # the epoch of `value`
    last: float | None = None  # `metric` at the trial's last epoch
    epochs: int | None = None  # epochs the trial trained


@dataclass(frozen=True)
class RunResult:
    """How an experiment ended: its folder (`path`, a local path or URI: `analysis` reads it), the
    number of trials and of errored ones, the best trial (None when no trial reported), and with
    --until-decided why it stopped adding seeds (`stopped`)."""

    path: str
    trials: int
    errors: int
    best: BestTrial | None
    stopped: str | None = None


class _Record(ray_tune.Callback):
    """Keeps the ledger as Tune starts and ends trials (in the driver)."""

    def __init__(self, ledger: Ledger, factors: tuple[str, ...]) -> None:
        self.ledger, self.factors = ledger, factors

    def _mark(self, trial, status: str) -> None:
        self.ledger.mark(group_folder(trial.config, trial.trial_id, self.factors), status, trial.config)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._mark(trial, "running")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._mark(trial, "terminated")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._mark(trial, "error")


def run_experiment(plan: Plan, options: RunOptions = RunOptions()) -> RunResult:
    """Run `plan` as one Tune experiment (a Tune run per wave with --until-decided), or finish it with
    `options.resume`, and return when every trial has ended. Prints the plan (with its estimated time), the
    commands that show it live (TensorBoard; MLflow and optuna-dashboard when used) and the progress.

    Starts a local Ray cluster unless one is running in this process or `options.address` names one
    (it stays up afterwards, for the next experiment). Loads the data set once, in this process, and
    shares it with the trials. Writes the experiment record (`cnnsearch.json`) into a new folder
    `options.storage`/`options.name`. Raises RunError (one line) for an experiment that cannot
    start: a folder that is taken (or not this study's, for --resume), storage or data that cannot be
    reached, resources the cluster does not have, `options.mps` where MPS cannot start. With `mps`
    the Ray cluster it starts is shut down at the end, together with the MPS daemon its workers use.

    SIGINT (Ctrl-C) and SIGTERM stop it as Tune stops on Ctrl-C (running trials end) and raise
    Interrupted; a second signal stops at once."""
    try:
        filesystem, storage = locate_folder(options.storage)
    except RecordError as exc:
        raise RunError(redact(f"--storage {exc}")) from None
    name = options.name or f"{plan.space.name}-{plan.budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = f"{storage.rstrip('/')}/{name}"
    if options.resume:
        _check_resume(filesystem, exp_path, plan)
    if plan.until_decided:
        from analysis.claims import default_claims_file

        if default_claims_file(plan.space.name) is None:
            raise RunError(f"--until-decided adds seeds until the claims of analysis/claims/{plan.space.name}.yaml are "
                           "decided, and there is no such file; write one (analysis/README.md) or drop --until-decided")
    if options.address and filesystem.type_name == "local":
        print(f"WARNING: --storage {redact(options.storage)} is a local path; on a multi-node cluster the workers on "
              "other nodes cannot write there. Use a shared folder or a URI such as s3://bucket/path.", file=sys.stderr)
    if options.dashboard_host == "0.0.0.0" and not options.address:
        print("WARNING: --dashboard-host 0.0.0.0 exposes the Ray dashboard (which can run code on this machine) "
              "to every network this machine is on; keep its token secret, or use 127.0.0.1 and an SSH tunnel.",
              file=sys.stderr)

    from cnnsearch.data import DataError, load_dataset

    try:
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(StopOnSignal(exp_path, plan.num_trials))
            stack.enter_context(claim_folder(filesystem, exp_path, resume=options.resume, shown=exp_path))
            ledger = _ledger(filesystem, exp_path) if options.resume else Ledger(filesystem, exp_path)
            try:
                data = load_dataset(plan.dataset_name, data_dir=options.data_dir, download=options.download)
            except DataError as exc:
                raise RunError(str(exc)) from None
            if options.mps:
                if ray.is_initialized():
                    raise RunError("--mps must start before the Ray cluster it serves, but Ray is already running in "
                                   "this process; call run_experiment with mps=True before anything starts Ray")
                try:
                    stack.enter_context(mps_daemon())
                except MPSError as exc:
                    raise RunError(str(exc)) from None
                stack.callback(ray.shutdown)  # its workers are MPS clients: they go with the daemon
            return _run(plan, options, data, filesystem, storage, name, exp_path, stop, ledger)
    except Interrupted as stopped:  # what --resume will find
        ledger = _ledger(filesystem, exp_path)
        stopped.finished, stopped.resumable = ledger.count("terminated"), bool(ledger.groups)
        raise


def _run(plan: Plan, options: RunOptions, data, filesystem: pafs.FileSystem, storage: str, name: str,
         exp_path: str, stop: StopOnSignal, ledger: Ledger) -> RunResult:
    context = start_ray(options)
    stop.arm()
    cluster = ray.cluster_resources()
    gpus = options.trial_gpus(cluster.get("GPU", 0), cuda_graph=plan.base_config().get("cuda_graph") is not False)
    if gpus > cluster.get("GPU", 0):
        raise RunError(f"--gpus-per-trial {gpus} but the cluster has {cluster.get('GPU', 0):g} GPU(s); "
                       "use --gpus-per-trial 0, or --num-gpus N to declare logical GPUs on a local cluster")
    if options.cpus_per_trial > cluster.get("CPU", 0):
        raise RunError(f"--cpus-per-trial {options.cpus_per_trial:g} but the cluster has {cluster.get('CPU', 0):g} CPU(s)")
    fused = options.fused(gpus, plan.unfusable)
    concurrent = concurrency(plan.num_trials, cluster, options.cpus_per_trial, gpus, options.max_concurrent)
    factors = tuple(f.name for f in plan.space.factors)
    local = filesystem.type_name == "local"
    # A local --storage goes to the trials resolved: Tune runs each trial in a working folder of its own.
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(train_group, data=data, storage=storage if local else options.storage, name=name,
                                 metric=plan.space.metric, mode=plan.space.mode, fuse=fused, factors=factors),
        {"cpu": options.cpus_per_trial, "gpu": gpus})
    study = f"{exp_path}/{OPTUNA_DB}" if plan.search == "optuna" and local else None
    loggers = mlflow_logger(options, name, storage, filesystem)
    print_plan(plan, options, context, gpus, concurrent, exp_path, cluster,
               watch_lines(exp_path, local, loggers, study), fused)
    if not options.resume:
        record = plan.record(resources={"cpu": options.cpus_per_trial, "gpu": gpus}, command=options.command,
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), provenance=Provenance.collect())
        try:
            record.write(exp_path, filesystem)  # the folder is an experiment from here on
        except OSError as exc:
            raise RunError(f"cannot write the experiment record in {exp_path} ({exc})") from None

    def wave(searcher, trials: int) -> None:  # one Tune run: a sampled design's draws, or a wave's list of trials
        tune_config = ray_tune.TuneConfig(
            metric=plan.space.metric, mode=plan.space.mode, num_samples=trials, search_alg=searcher,
            scheduler=plan.scheduler_entry.build(ray_tune.schedulers, plan.epochs, plan.scheduler_settings),
            max_concurrent_trials=options.max_concurrent,
            trial_dirname_creator=lambda trial: group_folder(trial.config, trial.trial_id, factors),
            # A new trial reuses a finished trial's worker: torch, torchvision and the shared data
            # set are imported and fetched once per worker, not once per trial.
            reuse_actors=True)
        # Tune's own files (the seeds' means as CSV, JSON and TensorBoard events that `tensorboard --logdir` reads)
        # land in each trial's folder beside its seeds' records; a trial keeps no Tune checkpoint (its seeds do).
        run_config = ray_tune.RunConfig(
            name=name, storage_path=storage, storage_filesystem=filesystem, verbose=1,
            failure_config=ray_tune.FailureConfig(max_failures=options.max_failures),
            progress_reporter=reporter(plan, options, trials), callbacks=[_Record(ledger, factors), *loggers])
        stop.fit(ray_tune.Tuner(trainable, param_space=param_space(plan), tune_config=tune_config, run_config=run_config))

    # Tune's newer console output ignores a ProgressReporter and prints the design point as a
    # truncated dict; the classic table shows our columns (point label, seeds, epoch, val_acc).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune lets a searcher other than its grid generator keep one trial waiting for resources at a time, so
    # trials that share a GPU would start one after another, each after the one before had started. The fixed
    # designs' TrialList gets the grid generator's allowance (Ray's rule: max(200, 1.1 x the cluster's CPUs)).
    pending = None if plan.space.design == "sample" else str(max(200, int(cluster.get("CPU", 1) * 1.1)))
    stopped = None
    with _tune_hints_dropped(), environ("TUNE_MAX_PENDING_TRIALS_PG", pending):
        if plan.space.design == "sample":
            searcher, trials = sampled_searcher(plan, ledger, study)
            if trials:
                wave(searcher, trials)
        else:
            try:
                groups = plan.wave_groups(ledger)
            except SpaceError as exc:
                raise RunError(f"--resume: {exc}; it cannot be resumed") from None
            if not ledger.groups:
                ledger.plan(groups)
            while True:
                todo = [g for g in groups if ledger.groups[g.name]["status"] != "terminated"]
                if todo:
                    wave(TrialList([plan.group_params(g) for g in todo], plan.space.metric, plan.space.mode), len(todo))
                if not plan.until_decided:
                    break
                from analysis.adaptive import next_wave

                look, groups, stopped = next_wave(plan, exp_path, ledger)
                print("\n".join(look.lines()), flush=True)
                if not groups:
                    break
    return RunResult(path=exp_path, trials=len(ledger.groups), errors=ledger.count("error"),
                     best=_best(filesystem, exp_path, ledger, plan), stopped=stopped)


# ------------------------------------------------------------------------------------------ parts
def _ledger(filesystem: pafs.FileSystem, exp_path: str) -> Ledger:
    try:
        return Ledger.read(filesystem, exp_path)
    except RecordError as exc:
        raise RunError(f"--resume: {exp_path}: {exc}; it cannot be resumed") from None


@contextlib.contextmanager
def _tune_hints_dropped():
    """Tune's log without its resume hint (`Tuner.restore(...)`, not this project's command) and its warning,
    after a stop, for each trial that had not started ("could not fetch metrics")."""
    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tuner.restore(" not in message and not message.startswith("Failed to fetch metrics for")

    loggers = [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.execution.tune_controller",
                                              "ray.tune.analysis.experiment_analysis")]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)


def _check_resume(filesystem: pafs.FileSystem, exp_path: str, plan: Plan) -> None:
    """--resume needs the record of the same study, run the same way."""
    try:
        why = plan.resume_error(ExperimentRecord.read(exp_path, filesystem))
    except RecordError as exc:
        raise RunError(f"--resume: {exp_path} is not a cnnsearch experiment ({exc}); check --storage and --name") from None
    if why:
        raise RunError(f"--resume: {exp_path} {why}")


# ------------------------------------------------------------------------------------------ output
def _best(filesystem: pafs.FileSystem, exp_path: str, ledger: Ledger, plan: Plan) -> BestTrial | None:
    """The trial whose seeds' mean was best at any epoch, over every wave and every run of a resumed experiment,
    from the seeds' own records."""
    metric, mode = plan.space.metric, plan.space.mode
    found = [seed_means(filesystem, f"{exp_path}/{folder}", metric, mode)
             for folder, group in ledger.groups.items() if group["status"] != "replaced"]
    found = [f for f in found if f is not None]
    if not found:
        return None
    best = best_of(found, mode, key=lambda f: f["value"])
    config, base = trial_config(best["params"]), plan.base_config()
    return BestTrial(metric, best["value"], config, {k: v for k, v in config.items() if k != "seed" and base.get(k) != v},
                     epoch=best["epoch"], last=best["last"], epochs=best["epochs"])
