"""Start (or resume) the Tune experiment a `Plan` describes, on a local or existing Ray cluster.

    from search_spaces import load_space
    from tune import Plan, RunOptions, run_experiment

    result = run_experiment(Plan(load_space("ablation"), "smoke"), RunOptions(storage="runs", name="abl"))
    result.path, result.trials, result.errors, result.best     # then analysis.load_experiment(result.path)
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune as ray_tune

from search_spaces import ExperimentRecord, Provenance, RecordError, level_label, locate_folder, trial_config

from . import faults
from .estimate import concurrency, estimate_line
from .mps import MPSError, mps_daemon
from .options import RunError, RunOptions
from .plan import Plan
from .progress import ProgressLine
from .trainable import train_trial

__all__ = ["run_experiment", "RunResult", "BestTrial"]

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc"]
MLFLOW_DB = "mlflow.db"  # in --storage: every experiment there is one MLflow experiment
OPTUNA_DB = "optuna.db"  # in the experiment folder, for optuna-dashboard


@dataclass(frozen=True)
class BestTrial:
    """The best trial at its best epoch: `value` of `metric` at `epoch`, and at its last epoch, its
    flat config, and the keys of that config that differ from the plan's base config."""

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
    number of trials and of errored ones, and the best trial (None when no trial reported)."""

    path: str
    trials: int
    errors: int
    best: BestTrial | None


def run_experiment(plan: Plan, options: RunOptions = RunOptions()) -> RunResult:
    """Run `plan` as one Tune experiment, or finish it with `options.resume`, and return when every
    trial has ended. Prints the plan (with its estimated time), the commands that show it live
    (TensorBoard; MLflow and optuna-dashboard when used) and the progress (`options.progress`).

    Starts a local Ray cluster unless one is running in this process or `options.address` names one
    (it stays up afterwards, for the next experiment). Loads the data set once, in this process, and
    shares it with the trials. Writes the experiment record (`cnnsearch.json`) into a new folder
    `options.storage`/`options.name`. Raises RunError (one line) for an experiment that cannot
    start: a folder that is taken (or not an experiment, for --resume), storage or data that cannot be
    reached, resources the cluster does not have, `options.mps` where MPS cannot start. With `mps`
    the Ray cluster it starts is shut down at the end, together with the MPS daemon its workers use."""
    try:
        filesystem, storage = locate_folder(options.storage)
    except RecordError as exc:
        raise RunError(f"--storage {exc}") from None
    name = options.name or f"{plan.space.name}-{plan.budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = f"{storage.rstrip('/')}/{name}"
    _check_folder(filesystem, exp_path, plan, resume=options.resume)
    if options.address and filesystem.type_name == "local":
        print(f"WARNING: --storage {options.storage} is a local path; on a multi-node cluster the workers on other "
              "nodes cannot write there. Use a shared folder or a URI such as s3://bucket/path.", file=sys.stderr)
    if options.dashboard_host == "0.0.0.0" and not options.address:
        print("WARNING: --dashboard-host 0.0.0.0 exposes the Ray dashboard (which can run code on this machine) "
              "to every network this machine is on; keep its token secret, or use 127.0.0.1 and an SSH tunnel.",
              file=sys.stderr)

    from cnnsearch.data import DataError, load_dataset

    try:
        data = load_dataset(plan.dataset_name, data_dir=options.data_dir, download=options.download)
    except DataError as exc:
        raise RunError(str(exc)) from None

    with contextlib.ExitStack() as stack:
        if options.mps:
            if ray.is_initialized():
                raise RunError("--mps must start before the Ray cluster it serves, but Ray is already running in "
                               "this process; call run_experiment with mps=True before anything starts Ray")
            try:
                stack.enter_context(mps_daemon())
            except MPSError as exc:
                raise RunError(str(exc)) from None
            stack.callback(ray.shutdown)  # its workers are MPS clients: they go with the daemon
        return _run(plan, options, data, filesystem, storage, name, exp_path)


def _run(plan: Plan, options: RunOptions, data, filesystem: pafs.FileSystem, storage: str, name: str,
         exp_path: str) -> RunResult:
    context = _start_ray(options)
    cluster = ray.cluster_resources()
    gpus = options.trial_gpus(cluster.get("GPU", 0), cuda_graph=plan.base_config().get("cuda_graph") is not False)
    if gpus > cluster.get("GPU", 0):
        raise RunError(f"--gpus-per-trial {gpus} but the cluster has {cluster.get('GPU', 0):g} GPU(s); "
                       "use --gpus-per-trial 0, or --num-gpus N to declare logical GPUs on a local cluster")
    if options.cpus_per_trial > cluster.get("CPU", 0):
        raise RunError(f"--cpus-per-trial {options.cpus_per_trial:g} but the cluster has {cluster.get('CPU', 0):g} CPU(s)")

    trial = faults.failing_trial if faults.armed() else train_trial
    trainable = ray_tune.with_resources(ray_tune.with_parameters(trial, data=data),
                                        {"cpu": options.cpus_per_trial, "gpu": gpus})
    concurrent = concurrency(plan.num_trials, cluster, options.cpus_per_trial, gpus, options.max_concurrent)
    local = filesystem.type_name == "local"
    study = f"{exp_path}/{OPTUNA_DB}" if plan.search == "optuna" and local else None
    callbacks = _loggers(options, name, storage, filesystem)
    _print_plan(plan, options, context, gpus, concurrent, exp_path, cluster, _watch(exp_path, local, callbacks, study))

    if options.resume:
        tuner = ray_tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
    else:
        record = plan.record(resources={"cpu": options.cpus_per_trial, "gpu": gpus}, command=options.command,
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), provenance=Provenance.collect())
        record.write(exp_path, filesystem)  # the folder is an experiment from here on
        tuner = ray_tune.Tuner(trainable, param_space=plan.param_space(), tune_config=_tune_config(plan, options, study),
                               run_config=_run_config(plan, options, name, storage, filesystem, callbacks))
    # Tune's newer console output ignores a ProgressReporter and prints the design point as a
    # truncated dict; the classic table shows our columns (point label, seed, epoch, val_acc).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # num_to_keep=1 makes Tune snapshot the experiment state after every checkpoint (so --resume never
    # points at a deleted one); with short CPU epochs that trips a "may become a bottleneck" warning on
    # nearly every epoch. The local snapshot is a small JSON write (bench/RESULTS.md, Tune overhead), and
    # Tune's separate slow-sync warning (30 s) still fires for a storage that is really slow.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    results = tuner.fit()
    return RunResult(path=exp_path, trials=len(results), errors=results.num_errors, best=_best(results, plan))


# ------------------------------------------------------------------------------------- Tune's parts
def _tune_config(plan: Plan, options: RunOptions, study: str | None) -> ray_tune.TuneConfig:
    space = plan.space
    entry = plan.scheduler_entry
    return ray_tune.TuneConfig(
        metric=space.metric, mode=space.mode, num_samples=plan.num_samples if space.design == "sample" else 1,
        scheduler=entry.build(ray_tune.schedulers, plan.epochs, plan.scheduler_settings),
        search_alg=_searcher(plan, study), max_concurrent_trials=options.max_concurrent, trial_dirname_creator=_trial_dirname,
        # A new trial reuses a finished trial's worker: torch, torchvision and the shared data
        # set are imported and fetched once per worker, not once per trial.
        reuse_actors=True,
    )


def _run_config(plan: Plan, options: RunOptions, name: str, storage: str, filesystem: pafs.FileSystem,
                callbacks: list) -> ray_tune.RunConfig:
    """Where results go and how trials are kept: the one place for callbacks, checkpoint policy, reporters."""
    return ray_tune.RunConfig(
        name=name, storage_path=storage, storage_filesystem=filesystem,
        failure_config=ray_tune.FailureConfig(max_failures=options.max_failures),
        # Two checkpoints per trial at most: Tune always keeps the latest (restarts and --resume continue
        # from it) and, with a score, also the best epoch's (what `analysis best` restores). A full-width
        # ResNet-18 checkpoint (weights and Adam moments) is about 134 MB.
        checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=plan.space.metric,
                                                    checkpoint_score_order=plan.space.mode),
        progress_reporter=_reporter(plan, options), verbose=1,
        # Tune adds its CSV, JSON and TensorBoard (tensorboardX) loggers to these: every trial folder
        # gets events.out.tfevents.* that `tensorboard --logdir` reads.
        callbacks=callbacks,
    )


def _searcher(plan: Plan, study: str | None = None):
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        if study is None:
            return OptunaSearch(seed=plan.seed)  # TPE, Optuna's default sampler
        from optuna.storages import RDBStorage

        # Optuna's own record of the study (trials, values per epoch), for optuna-dashboard.
        return OptunaSearch(seed=plan.seed, storage=RDBStorage(f"sqlite:///{study}"), study_name="cnnsearch")
    if plan.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=plan.seed)
    return None  # grid: Tune's default generator expands the grid_search keys


def _trial_dirname(trial) -> str:
    """MODEL[_POINT]_sSEED_ID, e.g. resnet18_stem_kernel=7_s0_4e250_00001: the folder says what trained.
    (Nothing reads it back: the analysis trusts params.json.)"""
    point = trial.config.get("design_point")
    if isinstance(point, dict):
        label = point["label"] if point.get("label") != "base" else None
    else:  # grid and sampled designs: the levels Tune chose
        label = ",".join(_level_words(k, v) for k, v in (trial.evaluated_params or {}).items()
                         if k not in ("seed", "model"))
    what = "_".join(p for p in (trial.config.get("model", "model"), label) if p)
    what = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).replace(",", "-"), what)  # [3,3,3,3] -> 3-3-3-3
    what = re.sub(r"[^A-Za-z0-9_.=-]+", "_", what)[:100]  # the id after it keeps the name unique
    return f"{what}_s{trial.config.get('seed', 0)}_{trial.trial_id}"


def _level_words(key: str, value: Any) -> str:
    """`dropout=0.156`, or a multi-key level's own keys (`optimizer=sgd,lr=0.01`)."""
    if isinstance(value, Mapping):
        return level_label(value)
    return f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={level_label(value)}"


def _reporter(plan: Plan, options: RunOptions):
    if options.progress == "line":
        return ProgressLine(plan)
    if plan.space.design == "one_at_a_time":
        parameters = {"design_point/label": "point"}
    else:  # a multi-key factor (a mapping of config keys) gets a column per key
        parameters = {f"{f.name}/{k}" if f.multi_key else f.name: k for f in plan.space.factors for k in f.keys}
    # The metrics are each trial's latest epoch; the runner's summary gives the best epoch's.
    metrics = {m: f"{m} (last)" if m == plan.space.metric else m for m in METRIC_COLUMNS}
    # Wide enough for a point label such as blocks_per_stage=[3,3,3,3] (Tune cuts at 20 by default).
    return ray_tune.CLIReporter(metric_columns=metrics, parameter_columns={**parameters, "seed": "seed"},
                                max_report_frequency=30, max_column_length=40)


def _loggers(options: RunOptions, name: str, storage: str, filesystem: pafs.FileSystem) -> list:
    """The loggers asked for with --log-to, besides Tune's own."""
    callbacks = []
    if "mlflow" in options.log_to:
        try:
            from ray.air.integrations.mlflow import MLflowLoggerCallback
            import mlflow  # noqa: F401  (Ray imports it only when the run starts)
        except ImportError:
            raise RunError("--log-to mlflow needs MLflow: pip install -e '.[mlflow]'") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            if filesystem.type_name != "local":
                raise RunError(f"--log-to mlflow: --storage {storage} is not a local folder; set MLFLOW_TRACKING_URI "
                               "to an MLflow server or database")
            uri = f"sqlite:///{os.path.abspath(storage)}/{MLFLOW_DB}"
        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=name, save_artifact=False))
    return callbacks


# ------------------------------------------------------------------------------ folder and cluster
def _check_folder(filesystem: pafs.FileSystem, exp_path: str, plan: Plan, *, resume: bool) -> None:
    """A new experiment needs a free folder; --resume needs the record of the same space and budget."""
    exists = filesystem.get_file_info(exp_path).type != pafs.FileType.NotFound
    if not resume:
        if exists:
            raise RunError(f"{exp_path} already exists; pass --resume to finish it, or choose another --name")
        return
    try:
        saved = ExperimentRecord.read(exp_path, filesystem)
    except RecordError as exc:
        raise RunError(f"--resume: {exp_path} is not a cnnsearch experiment ({exc}); check --storage and --name") from None
    if (saved.space, saved.budget) != (plan.space.name, plan.budget):
        raise RunError(f"--resume: {exp_path} ran space {saved.space} at budget {saved.budget}; "
                       f"pass --space {saved.space} --budget {saved.budget}")


def _start_ray(options: RunOptions):
    if ray.is_initialized():
        return None
    if options.address:
        return ray.init(address=options.address)
    # Ray warns on every new local cluster that it enabled token authentication (its default, kept
    # here); the plan's dashboard line already says where the token is.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: not record.getMessage().startswith("Token authentication is enabled for this Ray cluster"))
    # Without --address Ray joins a cluster that `ray start` left running on this machine (or RAY_ADDRESS),
    # and then refuses the resources that describe a new one.
    try:
        return ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=options.dashboard,
                        dashboard_host=options.dashboard_host)
    except ValueError as exc:
        if "existing cluster" not in str(exc):
            raise
        raise RunError("--num-cpus/--num-gpus describe a new local cluster, but a Ray cluster is already running here "
                       "(`ray start`, or RAY_ADDRESS): drop them to run on it, or stop it with `ray stop`") from None


# ------------------------------------------------------------------------------------------ output
def _watch(exp_path: str, local: bool, callbacks: list, study: str | None) -> list[str]:
    """The commands that show the experiment while it runs (and after)."""
    lines = [f"tensorboard --logdir {exp_path}" if local else f"tensorboard --logdir {exp_path}  (after copying "
             "it here, unless TensorBoard reads that filesystem)"]
    for callback in callbacks:
        if hasattr(callback, "tracking_uri"):
            lines.append(f"mlflow ui --backend-store-uri {callback.tracking_uri}")
    if study:
        lines.append(f"optuna-dashboard sqlite:///{study}")
    return lines


def _print_plan(plan: Plan, options: RunOptions, context, gpus: float, concurrent: int, exp_path: str,
                cluster: dict[str, float], watch: list[str]) -> None:
    space = plan.space
    budget = space.budgets[plan.budget].overrides
    shape = ", ".join(f"{k} {budget[k]}" for k in ("epochs", "train_subset", "width", "batch_size") if k in budget)
    scheduler = plan.scheduler_entry.plan(plan.scheduler_settings, space.metric)
    print(f"plan: space {space.name} ({space.design}), {plan.num_trials} trials, budget {plan.budget} ({shape}); "
          f"{options.cpus_per_trial:g} CPU + {gpus:g} GPU per trial{' (MPS on)' if options.mps else ''}, "
          f"up to {concurrent} at once; "
          f"{plan.num_trials * plan.epochs} epochs in total at most; {scheduler}; search {plan.search}"
          f"{' (resuming)' if options.resume else ''}")
    print(estimate_line(plan, options, cluster))
    print(f"results: {exp_path}")
    print("watch: " + "\n       ".join(watch))
    url = getattr(context, "dashboard_url", None) if context is not None else None
    if url:
        print(f"dashboard: http://{url}  (it asks for a token: run `ray get-auth-token`, "
              "kept in ~/.ray/auth_token)")
    elif options.address:
        print(f"dashboard: on the cluster's head node ({options.address}), port 8265")
    if 0 < gpus < 1 and not options.mps and plan.base_config().get("cuda_graph") is not False and not options.address:
        print("note: trials sharing a GPU without MPS take turns on it (CUDA-graph steps gain 0.9-1.2x from "
              "sharing, bench/RESULTS.md); --mps runs them at once (1.2-2.8x)")
    sys.stdout.flush()


def _best(results, plan: Plan) -> BestTrial | None:
    space = plan.space
    try:
        best = results.get_best_result(metric=space.metric, mode=space.mode, scope="all")
    except RuntimeError:
        return None
    if not best.metrics:
        return None
    frame = best.metrics_dataframe
    value, epoch, last, epochs = best.metrics.get(space.metric), None, None, None
    if frame is not None and space.metric in frame:
        at = frame[space.metric].idxmax() if space.mode == "max" else frame[space.metric].idxmin()
        value, epoch = frame.loc[at, space.metric], int(frame.loc[at, "epoch"])
        last, epochs = float(frame[space.metric].iloc[-1]), int(frame["epoch"].iloc[-1])
    config = trial_config(best.config)
    base = plan.base_config()
    return BestTrial(space.metric, float(value), config, {k: v for k, v in config.items() if base.get(k) != v},
                     epoch=epoch, last=last, epochs=epochs)
