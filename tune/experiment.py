"""Start (or resume) the Tune experiment a `Plan` describes, on a local or existing Ray cluster.

    from search_spaces import load_space
    from tune import Plan, RunOptions, run_experiment

    result = run_experiment(Plan(load_space("ablation"), "smoke"), RunOptions(storage="runs", name="abl"))
    result.path, result.trials, result.errors, result.best     # then analysis.load_experiment(result.path)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune as ray_tune

from cnnsearch.cli import redact
from search_spaces import ExperimentRecord, Provenance, RecordError, level_label, locate_folder, trial_config

from . import faults
from .cluster import require_token_auth
from .estimate import concurrency, estimate_line
from .folder import claim_folder
from .mps import MPSError, mps_daemon
from .options import RunError, RunOptions
from .plan import Plan
from .progress import ProgressLine
from .state import check_tune_state, saved_statuses
from .trainable import train_trial

__all__ = ["run_experiment", "RunResult", "BestTrial", "Interrupted"]

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


class Interrupted(Exception):
    """The experiment was stopped by SIGINT (Ctrl-C) or SIGTERM: `finished` of `trials` trials had
    ended in the state Tune saved, and `resumable` says whether it saved any (what --resume continues).
    `path` is the experiment folder."""

    def __init__(self, signum: int, path: str, trials: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.path, self.trials, self.finished, self.resumable = signum, path, trials, 0, False


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
    the Ray cluster it starts is shut down at the end, together with the MPS daemon its workers use.

    SIGINT (Ctrl-C) and SIGTERM stop it as Tune stops on Ctrl-C (running trials end, the state is
    saved) and raise Interrupted; a second signal stops at once. A resume whose state cannot be
    restored exactly, or that names anything outside what Tune writes for cnnsearch, is refused
    before Ray reads it (tune/state.py)."""
    try:
        filesystem, storage = locate_folder(options.storage)
    except RecordError as exc:
        raise RunError(redact(f"--storage {exc}")) from None
    name = options.name or f"{plan.space.name}-{plan.budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = f"{storage.rstrip('/')}/{name}"
    if options.resume:
        _check_resume(filesystem, exp_path, plan)
    if options.fuse:
        _check_fusable(plan)
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
            stop = stack.enter_context(_StopOnSignal(exp_path, plan.num_trials))
            stack.enter_context(claim_folder(filesystem, exp_path, resume=options.resume, shown=exp_path))
            if options.resume:  # once no other run can be writing Tune's state
                check_tune_state(filesystem, exp_path, exp_path, plan)
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
            return _run(plan, options, data, filesystem, storage, name, exp_path, stop)
    except Interrupted as stopped:  # count what Tune's saved state holds: what --resume will find
        statuses = saved_statuses(filesystem, exp_path)
        stopped.finished, stopped.resumable = statuses.count("TERMINATED"), bool(statuses)
        raise


def _run(plan: Plan, options: RunOptions, data, filesystem: pafs.FileSystem, storage: str, name: str,
         exp_path: str, stop: _StopOnSignal) -> RunResult:
    context = _start_ray(options)
    stop.arm()
    cluster = ray.cluster_resources()
    gpus = options.trial_gpus(cluster.get("GPU", 0), cuda_graph=plan.base_config().get("cuda_graph") is not False)
    if gpus > cluster.get("GPU", 0):
        raise RunError(f"--gpus-per-trial {gpus} but the cluster has {cluster.get('GPU', 0):g} GPU(s); "
                       "use --gpus-per-trial 0, or --num-gpus N to declare logical GPUs on a local cluster")
    if options.cpus_per_trial > cluster.get("CPU", 0):
        raise RunError(f"--cpus-per-trial {options.cpus_per_trial:g} but the cluster has {cluster.get('CPU', 0):g} CPU(s)")

    concurrent = concurrency(plan.num_trials, cluster, options.cpus_per_trial, gpus, options.max_concurrent)
    fused = None
    if options.fuse:
        from .fusion import fused_capacity, fused_trial, start_coordinator

        fused = fused_capacity(options.fuse, gpus, concurrent)
        trial = faults.failing_fused_trial if faults.armed() else fused_trial
        parameters = ray_tune.with_parameters(trial, coordinator=start_coordinator(data), capacity=fused)
    else:
        parameters = ray_tune.with_parameters(faults.failing_trial if faults.armed() else train_trial, data=data)
    trainable = ray_tune.with_resources(parameters, {"cpu": options.cpus_per_trial, "gpu": gpus})
    local = filesystem.type_name == "local"
    study = f"{exp_path}/{OPTUNA_DB}" if plan.search == "optuna" and local else None
    callbacks = _loggers(options, name, storage, filesystem)
    _print_plan(plan, options, context, gpus, concurrent, exp_path, cluster, _watch(exp_path, local, callbacks, study),
                fused)

    if options.resume:
        tuner = ray_tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
    else:
        record = plan.record(resources={"cpu": options.cpus_per_trial, "gpu": gpus}, command=options.command,
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), provenance=Provenance.collect())
        try:
            record.write(exp_path, filesystem)  # the folder is an experiment from here on
        except OSError as exc:
            raise RunError(f"cannot write the experiment record in {exp_path} ({exc})") from None
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
    # Tune lets a searcher other than its grid generator keep one trial waiting for resources at a time, so
    # trials that share a GPU would start one after another, each after the one before had started. The fixed
    # designs' TrialList gets the grid generator's allowance (Ray's rule: max(200, 1.1 x the cluster's CPUs)).
    pending = None if plan.space.design == "sample" else str(max(200, int(cluster.get("CPU", 1) * 1.1)))
    with _tune_logs_checked(), _environ("TUNE_MAX_PENDING_TRIALS_PG", pending):
        results = stop.fit(tuner)
    return RunResult(path=exp_path, trials=len(results), errors=results.num_errors, best=_best(results, plan))


# ------------------------------------------------------------------------------------- Tune's parts
def _tune_config(plan: Plan, options: RunOptions, study: str | None) -> ray_tune.TuneConfig:
    space = plan.space
    entry = plan.scheduler_entry
    return ray_tune.TuneConfig(
        metric=space.metric, mode=space.mode, num_samples=plan.num_trials,  # a sampled design's draws, or its list
        scheduler=entry.build(ray_tune.schedulers, plan.epochs, plan.scheduler_settings),
        search_alg=_searcher(plan, study, fuse=bool(options.fuse)), max_concurrent_trials=options.max_concurrent,
        trial_dirname_creator=_trial_dirname,
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


def _searcher(plan: Plan, study: str | None = None, fuse: bool = False):
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
    from .trials import TrialList

    params = plan.trial_params()
    if fuse:  # trials that can fuse start one after another, so they run (and fuse) together
        from .fusion import fuse_key

        base = plan.param_space()
        keys = [fuse_key(trial_config({**base, **p})) for p in params]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        params = [p for _, p in sorted(zip(keys, params), key=lambda pair: first[pair[0]])]
    return TrialList(params, plan.space.metric, plan.space.mode)  # fixed designs: the plan's trials


def _check_fusable(plan: Plan) -> None:
    """--fuse: fused training runs in the default memory layout, uncompiled (cnnsearch/fused.py)."""
    configs = [plan.base_config()] if plan.space.design == "sample" else \
        [json.loads(c) for c in plan.trial_configs()]
    for name in ("compile", "channels_last"):
        if any(c.get(name) for c in configs):
            raise RunError(f"--fuse: trials of this plan set {name}: true, which fused training does not support; "
                           f"set {name}: false in the space (or drop --fuse)")


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
# What --resume compares between the record and the plan the command line gives: Tune restores its
# own scheduler and searcher, so a plan that differs would be printed but not run.
_STUDY_KEYS = ("space", "design", "base", "factors", "points", "seeds", "metric", "mode", "budget", "epochs",
               "num_trials", "dataset", "scheduler", "search")


def _check_resume(filesystem: pafs.FileSystem, exp_path: str, plan: Plan) -> None:
    """--resume needs the record of the same study, run the same way (Tune's state is checked once the
    folder is locked: tune/state.py)."""
    try:
        saved = ExperimentRecord.read(exp_path, filesystem)
    except RecordError as exc:
        raise RunError(f"--resume: {exp_path} is not a cnnsearch experiment ({exc}); check --storage and --name") from None
    if (saved.space, saved.budget) != (plan.space.name, plan.budget):
        raise RunError(f"--resume: {exp_path} ran space {saved.space} at budget {saved.budget}; "
                       f"pass --space {saved.space} --budget {saved.budget}")
    was, now = _study(saved.to_json()), _study(plan.record().to_json())
    differ = [k for k in _STUDY_KEYS if was.get(k) != now.get(k)]
    if differ:
        raise RunError(f"--resume: {exp_path} ran with a different {', '.join(differ)}; resume with the flags and "
                       f"space file it ran with: {saved.command or 'see its cnnsearch.json'}")


def _study(record: dict[str, Any]) -> dict[str, Any]:
    space = record["space"]
    return {**{k: space.get(k) for k in ("design", "base", "factors", "points", "seeds", "metric", "mode")},
            "space": space.get("name"), **{k: record.get(k) for k in _STUDY_KEYS if k in record and k != "space"}}


_NO_TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"


class _StopOnSignal:
    """SIGINT and SIGTERM, while an experiment runs: the first stops it the way Tune stops on Ctrl-C
    (Tune's SIGUSR1 handler: running trials end and the state is saved), a second at once; either way
    `run_experiment` raises Interrupted. Before Tune runs (data loading, Ray's start) a signal stops at
    once. Tune's own SIGINT handler is kept out, so both signals take the same path."""

    def __init__(self, exp_path: str, trials: int) -> None:
        self.exp_path, self.trials, self.signum, self.fitting = exp_path, trials, None, False

    def __enter__(self) -> _StopOnSignal:
        self._saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: ray.init replaces SIGTERM's with one that exits at once. Only the
        main thread may set handlers; elsewhere (a notebook's worker thread) Tune's own stay."""
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, self._handle)

    def __exit__(self, kind, exc, tb) -> None:
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._saved.items():
                signal.signal(s, handler)
        # Stopped at once (KeyboardInterrupt), or code it landed in failed on its own while unwinding.
        if self.signum is not None and kind is not None and not issubclass(kind, Interrupted):
            raise Interrupted(self.signum, self.exp_path, self.trials) from None

    def _handle(self, signum: int, frame) -> None:
        first, self.signum = self.signum is None, self.signum or signum
        tune_stop = signal.getsignal(signal.SIGUSR1)  # installed by Tune when its loop starts
        if first and self.fitting and getattr(tune_stop, "__name__", "") == "signal_interrupt_tune_run":
            tune_stop(signum, frame)
            return
        raise KeyboardInterrupt

    def fit(self, tuner):
        """`tuner.fit()`, stopped by the signals as above; Interrupted if one came."""
        self.arm()
        self.fitting = True
        main = threading.current_thread() is threading.main_thread()
        with _environ(_NO_TUNE_SIGINT, "1" if main else None, override=True):  # Tune reads it when its loop starts
            results = tuner.fit()
        if self.signum is not None:
            raise Interrupted(self.signum, self.exp_path, self.trials)
        return results


class _RestoreFailed(Exception):
    pass


class _TuneLogFilter(logging.Filter):
    """Tune's log, read for two lines: its resume hint (`Tuner.restore(...)`, not this project's
    command: dropped) and "Failed to restore the run state", after which Tune would restart the
    experiment as one trial with empty params: raised out of Tune, so the resume stops there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Failed to restore the run state"):
            raise _RestoreFailed(record.exc_info[1] if record.exc_info else message)
        # After a stop, each trial that had not started yet gets a "could not fetch metrics" warning.
        return "Tuner.restore(" not in message and not message.startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def _environ(name: str, value: str | None, *, override: bool = False):
    """`name` set to `value` inside the block (None: left alone; a value the user set is kept unless
    `override`); as it was after."""
    previous = os.environ.get(name)
    if value is None or (previous is not None and not override):
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _tune_logs_checked():
    loggers = [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.execution.tune_controller",
                                              "ray.tune.analysis.experiment_analysis")]
    check = _TuneLogFilter()
    for logger in loggers:
        logger.addFilter(check)
    try:
        yield
    except _RestoreFailed as exc:
        raise RunError(f"--resume: Tune could not restore the experiment state "
                       f"({' '.join(str(exc.args[0]).split())[:200]}); it cannot be resumed") from None
    finally:
        for logger in loggers:
            logger.removeFilter(check)


def _start_ray(options: RunOptions):
    if ray.is_initialized():
        return None
    if options.address:
        context = ray.init(address=options.address)
        require_token_auth(options.address)
        return context
    # Ray warns on every new local cluster that it enabled token authentication (its default, kept
    # here); the plan's dashboard line already says where the token is.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: not record.getMessage().startswith("Token authentication is enabled for this Ray cluster"))
    # Without --address Ray joins a cluster that `ray start` left running on this machine (or RAY_ADDRESS),
    # and then refuses the resources that describe a new one.
    try:
        context = ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=options.dashboard,
                           dashboard_host=options.dashboard_host)
    except ValueError as exc:
        if "existing cluster" not in str(exc):
            raise
        raise RunError("--num-cpus/--num-gpus describe a new local cluster, but a Ray cluster is already running here "
                       "(`ray start`, or RAY_ADDRESS): drop them to run on it, or stop it with `ray stop`") from None
    require_token_auth(None)  # a cluster it joined may have been started without a token
    return context


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
                cluster: dict[str, float], watch: list[str], fused: int | None = None) -> None:
    space = plan.space
    budget = space.budgets[plan.budget].overrides
    shape = ", ".join(f"{k} {budget[k]}" for k in ("epochs", "train_subset", "width", "batch_size") if k in budget)
    scheduler = plan.scheduler_entry.plan(plan.scheduler_settings, space.metric)
    print(f"plan: space {space.name} ({space.design}), {plan.num_trials} trials, budget {plan.budget} ({shape}); "
          f"{options.cpus_per_trial:g} CPU + {gpus:g} GPU per trial{' (MPS on)' if options.mps else ''}, "
          f"up to {concurrent} at once{f' (a network fused {fused} to a process)' if fused else ''}; "
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
    if 0 < gpus < 1 and not (options.mps or fused) and plan.base_config().get("cuda_graph") is not False \
            and not options.address:
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
