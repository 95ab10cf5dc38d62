"""Start (or resume) the Tune experiment a `Plan` describes, on a local or existing Ray cluster."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Any

import ray
from pyarrow import fs as pafs
from ray import tune as ray_tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from cnnsearch.cli import fail
from search_spaces import trial_config

from .plan import Plan
from .run import PROG
from .trainable import train_trial

__all__ = ["run_experiment", "STATE_FILE"]

STATE_FILE = "cnnsearch.json"  # beside Tune's files: the space, budget and flags the analysis needs
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc"]


def run_experiment(args: argparse.Namespace, plan: Plan, *, gpus_here: bool, grace_period: int,
                   reduction_factor: int) -> int:
    space = plan.space
    filesystem, storage = _storage(args.storage)
    name = args.name or f"{space.name}-{plan.budget}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = f"{storage.rstrip('/')}/{name}"
    _check_experiment_folder(filesystem, exp_path, resume=args.resume, plan=plan)
    if args.address and filesystem.type_name == "local":
        print(f"WARNING: --storage {args.storage} is a local path; on a multi-node cluster the workers on other "
              "nodes cannot write there. Use a shared folder or a URI such as s3://bucket/path.", file=sys.stderr)
    if args.dashboard_host == "0.0.0.0" and not args.address:
        print("WARNING: --dashboard-host 0.0.0.0 exposes the Ray dashboard (which can run code on this machine) "
              "to every network this machine is on; keep its token secret, or use 127.0.0.1 and an SSH tunnel.",
              file=sys.stderr)

    from cnnsearch.data import DataError, load_dataset

    dataset_name = plan.dataset_name
    try:
        data = load_dataset(dataset_name, data_dir=args.data_dir, download=not args.no_download)
    except DataError as exc:
        fail(str(exc), prog=PROG)

    context = _start_ray(args)
    cluster = ray.cluster_resources()
    gpus_per_trial = args.gpus_per_trial if args.gpus_per_trial is not None else (0.25 if gpus_here else 0.0)
    if gpus_per_trial > cluster.get("GPU", 0):
        fail(f"--gpus-per-trial {gpus_per_trial} but the cluster has {cluster.get('GPU', 0):g} GPU(s); "
             "use --gpus-per-trial 0, or --num-gpus N to declare logical GPUs on a local cluster", prog=PROG)
    if args.cpus_per_trial > cluster.get("CPU", 0):
        fail(f"--cpus-per-trial {args.cpus_per_trial:g} but the cluster has {cluster.get('CPU', 0):g} CPU(s)", prog=PROG)

    trainable = ray_tune.with_resources(ray_tune.with_parameters(train_trial, data=data),
                                        {"cpu": args.cpus_per_trial, "gpu": gpus_per_trial})
    concurrent = _concurrency(plan.num_trials, cluster, args.cpus_per_trial, gpus_per_trial, args.max_concurrent)
    _print_plan(plan, args, context, gpus_per_trial, concurrent, grace_period, reduction_factor, exp_path)

    if args.resume:
        tuner = ray_tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
    else:
        _write_state(filesystem, exp_path, args, plan, grace_period, reduction_factor, gpus_per_trial)
        tuner = ray_tune.Tuner(
            trainable,
            param_space=plan.param_space(),
            tune_config=ray_tune.TuneConfig(
                metric=space.metric, mode=space.mode, num_samples=plan.num_samples if space.design == "sample" else 1,
                scheduler=_scheduler(plan, grace_period, reduction_factor), search_alg=_searcher(plan, args.seed),
                max_concurrent_trials=args.max_concurrent, trial_dirname_creator=_trial_dirname,
                # A new trial reuses a finished trial's worker: torch, torchvision and the shared data
                # set are imported and fetched once per worker, not once per trial.
                reuse_actors=True,
            ),
            run_config=ray_tune.RunConfig(
                name=name, storage_path=storage, storage_filesystem=filesystem,
                failure_config=ray_tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=1),
                progress_reporter=_reporter(plan), verbose=1,
            ),
        )
    # Tune's newer console output ignores a ProgressReporter and prints the design point as a
    # truncated dict; the classic table shows our columns (point label, seed, epoch, val_acc).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # num_to_keep=1 makes Tune snapshot the experiment state after every checkpoint (so --resume never
    # points at a deleted one); with short CPU epochs that trips a "may become a bottleneck" warning on
    # nearly every epoch. The local snapshot is a small JSON write (bench/RESULTS.md, Tune overhead), and
    # Tune's separate slow-sync warning (30 s) still fires for a storage that is really slow.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    results = tuner.fit()
    return _summarise(results, plan, exp_path, args)


def _storage(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local folder (made absolute, as Tune needs) or any URI pyarrow understands."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises several types for bad URIs and missing credentials
        fail(f"--storage {uri}: {str(exc).splitlines()[0]}", prog=PROG)


def _exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def _check_experiment_folder(filesystem, exp_path: str, *, resume: bool, plan: Plan) -> None:
    if not resume:
        if _exists(filesystem, exp_path):
            fail(f"{exp_path} already exists; pass --resume to finish it, or choose another --name", prog=PROG)
        return
    state_path = f"{exp_path}/{STATE_FILE}"
    if not _exists(filesystem, state_path):
        fail(f"--resume: {exp_path} is not a cnnsearch experiment (no {STATE_FILE}); check --storage and --name", prog=PROG)
    with filesystem.open_input_stream(state_path) as f:
        saved = json.loads(f.read())
    if (saved["space"]["name"], saved["budget"]) != (plan.space.name, plan.budget):
        fail(f"--resume: {exp_path} ran space {saved['space']['name']} at budget {saved['budget']}; "
             f"pass --space {saved['space']['name']} --budget {saved['budget']}", prog=PROG)


def _start_ray(args: argparse.Namespace):
    if ray.is_initialized():
        return None
    if args.address:
        return ray.init(address=args.address)
    # Without --address Ray joins a cluster that `ray start` left running on this machine (or RAY_ADDRESS),
    # and then refuses the resources that describe a new one.
    try:
        return ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=not args.no_dashboard,
                        dashboard_host=args.dashboard_host)
    except ValueError as exc:
        if "existing cluster" not in str(exc):
            raise
        fail("--num-cpus/--num-gpus describe a new local cluster, but a Ray cluster is already running here "
             "(`ray start`, or RAY_ADDRESS): drop them to run on it, or stop it with `ray stop`", prog=PROG)


def _concurrency(trials: int, cluster: dict[str, float], cpus: float, gpus: float, limit: int | None) -> int:
    fits = [trials, math.floor(cluster.get("CPU", 0) / cpus + 1e-9)]
    if gpus > 0:
        fits.append(math.floor(cluster.get("GPU", 0) / gpus + 1e-9))
    if limit:
        fits.append(limit)
    return max(1, min(fits))


def _scheduler(plan: Plan, grace_period: int, reduction_factor: int):
    if plan.scheduler == "fifo":
        return FIFOScheduler()
    # One rung per `reduction_factor`-fold more epochs, counted in reported epochs.
    return ASHAScheduler(time_attr="training_iteration", max_t=plan.epochs, grace_period=grace_period,
                         reduction_factor=reduction_factor)


def _searcher(plan: Plan, seed: int | None):
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)  # TPE, Optuna's default sampler
    if plan.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    return None  # grid: Tune's default generator expands the grid_search keys


def _trial_dirname(trial) -> str:
    point = trial.config.get("design_point")
    label = point["label"] if isinstance(point, dict) else "trial"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{label}_s{trial.config.get('seed', 0)}_{trial.trial_id}")[:120]


def _reporter(plan: Plan):
    if plan.space.design == "one_at_a_time":
        parameters = {"design_point/label": "point"}
    else:  # a multi-key factor (a mapping of config keys) gets a column per key
        parameters = {f"{f.name}/{k}" if f.multi_key else f.name: k for f in plan.space.factors for k in f.keys}
    return ray_tune.CLIReporter(metric_columns=METRIC_COLUMNS, parameter_columns={**parameters, "seed": "seed"},
                                max_report_frequency=30)


def _print_plan(plan: Plan, args, context, gpus_per_trial: float, concurrent: int, grace: int, reduction: int,
                exp_path: str) -> None:
    space = plan.space
    budget = space.budgets[plan.budget].overrides
    shape = ", ".join(f"{k} {budget[k]}" for k in ("epochs", "train_subset", "width", "batch_size") if k in budget)
    scheduler = f"ASHA on {space.metric} (grace {grace} epochs, keep 1/{reduction} per rung)" if plan.scheduler == "asha" else "FIFO"
    print(f"plan: space {space.name} ({space.design}), {plan.num_trials} trials, budget {plan.budget} ({shape}); "
          f"{args.cpus_per_trial:g} CPU + {gpus_per_trial:g} GPU per trial, up to {concurrent} at once; "
          f"{plan.num_trials * plan.epochs} epochs in total at most; {scheduler}; search {plan.search}"
          f"{' (resuming)' if args.resume else ''}")
    print(f"results: {exp_path}")
    url = getattr(context, "dashboard_url", None) if context is not None else None
    if url:
        print(f"dashboard: http://{url}  (it asks for a token: run `ray get-auth-token`, "
              "kept in ~/.ray/auth_token)")
    elif args.address:
        print(f"dashboard: on the cluster's head node ({args.address}), port 8265")
    sys.stdout.flush()


def _write_state(filesystem, exp_path: str, args, plan: Plan, grace: int, reduction: int, gpus_per_trial: float) -> None:
    space = plan.space
    state = {
        "space": {"name": space.name, "path": str(space.path), "description": space.description, "source": space.source,
                  "design": space.design, "metric": space.metric, "mode": space.mode, "seeds": list(space.seeds),
                  "base": plan.base_config(),
                  "factors": [{"name": f.name, "levels": _jsonable(f.levels), "distribution": _jsonable(f.distribution)}
                              for f in space.factors],
                  "points": [{"label": p.label, "factor": p.factor, "values": _jsonable(dict(p.values))}
                             for p in space.points()] if space.design != "sample" else None},
        "budget": plan.budget, "epochs": plan.epochs, "scheduler": plan.scheduler, "search": plan.search,
        "grace_period": grace, "reduction_factor": reduction, "num_trials": plan.num_trials,
        "dataset": plan.dataset_name,
        "resources": {"cpu": args.cpus_per_trial, "gpu": gpus_per_trial},
        "command": " ".join([PROG, *sys.argv[1:]]), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    filesystem.create_dir(exp_path, recursive=True)
    with filesystem.open_output_stream(f"{exp_path}/{STATE_FILE}") as f:
        f.write(json.dumps(state, indent=2).encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _summarise(results, plan: Plan, exp_path: str, args) -> int:
    space = plan.space
    errors = results.num_errors
    try:
        best = results.get_best_result(metric=space.metric, mode=space.mode, scope="all")
    except RuntimeError:
        best = None
    print()
    if best is not None and best.metrics:
        config = trial_config(best.config)
        base = plan.base_config()
        changed = {k: v for k, v in config.items() if base.get(k) != v}
        score = best.metrics_dataframe[space.metric].max() if best.metrics_dataframe is not None else best.metrics.get(space.metric)
        print(f"best trial: {space.metric} {score:.4f}; config differs from the base in {changed or 'nothing'}")
    print(f"{len(results)} trials, {errors} errored; results in {exp_path}")
    print(f"next: python -m analysis report {exp_path}")
    if errors:
        print(f"some trials errored; `{PROG} --space {args.space} --budget {plan.budget} --name "
              f"{os.path.basename(exp_path)} --storage {args.storage} --resume` retries them", file=sys.stderr)
    return 1 if errors else 0
