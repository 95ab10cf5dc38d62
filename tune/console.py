"""The runner's console: the plan's print-out, the progress line, and what SIGINT and SIGTERM do.

    [  3:12] 7/9 trials ended (5 stopped early), 2 running; 31 epochs; best val_acc 0.4410 (base seeds 0-3, epoch 4)

One line when something changed, at most every `every_s` seconds, instead of Tune's table every 30 s
(`--progress table` brings the table back). A trial is a design point with its seeds; its value is their mean.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from ray import tune as ray_tune
from ray.tune import ProgressReporter

from search_spaces import best_of, is_better, level_label
from search_spaces.estimate import estimate_line
from search_spaces.plan import Plan

from .options import RunError, RunOptions

__all__ = ["ProgressLine", "trial_label", "Interrupted", "StopOnSignal", "environ", "print_plan", "watch_lines",
           "reporter", "mlflow_logger", "METRIC_COLUMNS"]

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_acc"]
_FUSED = {True: "fused into one network", False: "one after another", None: "fused on a GPU, else one after another"}
MLFLOW_DB = "mlflow.db"  # in --storage: every experiment there is one MLflow experiment


class Interrupted(Exception):
    """The experiment was stopped by SIGINT (Ctrl-C) or SIGTERM: `finished` of `trials` trials had
    ended in the state Tune saved, and `resumable` says whether it saved any (what --resume continues).
    `path` is the experiment folder."""

    def __init__(self, signum: int, path: str, trials: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.path, self.trials, self.finished, self.resumable = signum, path, trials, 0, False


_NO_TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"


class StopOnSignal:
    """SIGINT and SIGTERM, while an experiment runs: the first stops it the way Tune stops on Ctrl-C
    (Tune's SIGUSR1 handler: running trials end and the state is saved), a second at once; either way
    `run_experiment` raises Interrupted. Before Tune runs (data loading, Ray's start) a signal stops at
    once. Tune's own SIGINT handler is kept out, so both signals take the same path."""

    def __init__(self, exp_path: str, trials: int) -> None:
        self.exp_path, self.trials, self.signum, self.fitting = exp_path, trials, None, False

    def __enter__(self) -> StopOnSignal:
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

    def fit(self, tuner) -> None:
        """`tuner.fit()`, stopped by the signals as above; Interrupted if one came."""
        self.arm()
        self.fitting = True
        main = threading.current_thread() is threading.main_thread()
        with environ(_NO_TUNE_SIGINT, "1" if main else None, override=True):  # Tune reads it when its loop starts
            tuner.fit()
        if self.signum is not None:
            raise Interrupted(self.signum, self.exp_path, self.trials)


@contextlib.contextmanager
def environ(name: str, value: str | None, *, override: bool = False):
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


def reporter(plan: Plan, options: RunOptions, trials: int):
    """The console view of a wave of `trials` trials: the progress line or Tune's table."""
    if options.progress == "line":
        return ProgressLine(plan, trials=trials)
    if plan.space.design == "one_at_a_time":
        parameters = {"design_point/label": "point"}
    else:  # a multi-key factor (a mapping of config keys) gets a column per key
        parameters = {f"{f.name}/{k}" if f.multi_key else f.name: k for f in plan.space.factors for k in f.keys}
    # The metrics are each trial's latest epoch; the runner's summary gives the best epoch's.
    metrics = {m: f"{m} (last)" if m == plan.space.metric else m for m in METRIC_COLUMNS}
    # Wide enough for a point label such as blocks_per_stage=[3,3,3,3] (Tune cuts at 20 by default).
    return ray_tune.CLIReporter(metric_columns=metrics, parameter_columns={**parameters, "seeds": "seeds"},
                                max_report_frequency=30, max_column_length=40)


def mlflow_logger(options: RunOptions, name: str, storage: str, filesystem) -> list:
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


def watch_lines(exp_path: str, local: bool, callbacks: list, study: str | None) -> list[str]:
    """The commands that show the experiment while it runs (and after)."""
    lines = [f"tensorboard --logdir {exp_path}" if local else f"tensorboard --logdir {exp_path}  (after copying "
             "it here, unless TensorBoard reads that filesystem)"]
    for callback in callbacks:
        if hasattr(callback, "tracking_uri"):
            lines.append(f"mlflow ui --backend-store-uri {callback.tracking_uri}")
    if study:
        lines.append(f"optuna-dashboard sqlite:///{study}")
    return lines


def print_plan(plan: Plan, options: RunOptions, context, gpus: float, concurrent: int, exp_path: str,
               cluster: dict[str, float], watch: list[str], fused: bool | None) -> None:
    space = plan.space
    budget = space.budgets[plan.budget].overrides
    shape = ", ".join(f"{k} {budget[k]}" for k in ("epochs", "train_subset", "width", "batch_size") if k in budget)
    scheduler = plan.scheduler_entry.plan(plan.scheduler_settings, space.metric)
    waves = f"; until decided: up to {plan.seed_cap} seeds per point, {plan.max_runs * plan.epochs} epochs at most" \
        if plan.until_decided else ""
    print(f"plan: space {space.name} ({space.design}), {plan.num_trials} trials (a point with its seeds each, "
          f"{plan.num_runs} seed runs, seeds {_FUSED[fused]}), budget "
          f"{plan.budget} ({shape}); {options.cpus_per_trial:g} CPU + {gpus:g} GPU per trial"
          f"{' (MPS on)' if options.mps else ''}, up to {concurrent} at once; {plan.num_runs * plan.epochs} epochs in "
          f"total at most{waves}; {scheduler}; search {plan.search}{' (resuming)' if options.resume else ''}")
    print(estimate_line(plan, options, cluster))
    print(f"results: {exp_path}")
    print("watch: " + "\n       ".join(watch))
    url = getattr(context, "dashboard_url", None) if context is not None else None
    if url:
        print(f"dashboard: http://{url}  (it asks for a token: run `ray get-auth-token`, "
              "kept in ~/.ray/auth_token)")
    elif options.address:
        print(f"dashboard: on the cluster's head node ({options.address}), port 8265")
    if 0 < gpus < 1 and not options.mps and plan.base_config().get("cuda_graph") is not False \
            and not options.address:
        print("note: trials sharing a GPU without MPS take turns on it (CUDA-graph steps gain 0.9-1.2x from "
              "sharing, bench/RESULTS.md); --mps runs them at once (1.2-2.8x)")
    sys.stdout.flush()



# ------------------------------------------------------------------------------------------ progress
def trial_label(config: dict[str, Any], factors: tuple[tuple[str, bool, bool], ...]) -> str:
    """How a trial is named in progress lines: its design point, or its factors' values, and its seeds.
    `factors`: (name, continuous, multi_key) of each factor of the space."""
    point = config.get("design_point")
    if isinstance(point, dict):
        label = point.get("label", "?")
    else:  # grid and sampled designs: Tune's config holds each factor's level (a mapping for a multi-key one)
        label = ",".join(f"{name}={config.get(name):.3g}" if continuous else
                         level_label(config.get(name)) if multi_key else f"{name}={level_label(config.get(name))}"
                         for name, continuous, multi_key in factors) or "base"
    seeds = config.get("seeds") or [config.get("seed", 0)]
    return f"{label} seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"


class ProgressLine(ProgressReporter):
    """Tune calls `should_report` after every state change and result; this prints a line when the
    counts or the best value changed and `every_s` has passed since the last line, and always at the end."""

    def __init__(self, plan, *, trials: int | None = None, every_s: float = 15.0):
        self.every_s = every_s
        self.metric, self.mode = plan.space.metric, plan.space.mode
        self.num_trials, self.epochs = trials or plan.num_trials, plan.epochs
        self.factors = tuple((f.name, f.continuous, f.multi_key) for f in plan.space.factors)
        self.started = time.monotonic()
        self.last_line_at = -float("inf")
        self.last_state: tuple | None = None
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best value, its epoch)

    def setup(self, start_time: float | None = None, *args: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def should_report(self, trials, done: bool = False) -> bool:
        for trial in trials:
            self._observe(trial)
        state = self._state(trials)
        if done:
            return True
        due = time.monotonic() - self.last_line_at >= self.every_s
        return due and state != self.last_state

    def report(self, trials, done: bool, *sys_info: str) -> None:
        self.last_state = self._state(trials)
        self.last_line_at = time.monotonic()
        # sys.stdout when printing, not when built: Tune pickles the reporter with the experiment.
        print(self.line(trials), file=sys.stdout, flush=True)

    def line(self, trials) -> str:
        count = {status: 0 for status in ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")}
        for trial in trials:
            count[trial.status] = count.get(trial.status, 0) + 1
        ended = count["TERMINATED"] + count["ERROR"]
        early = sum(1 for t in trials
                    if t.status == "TERMINATED" and self._epoch(t) < t.config.get("epochs", self.epochs))
        notes = [f"{early} stopped early" if early else "", f"{count['ERROR']} errored" if count["ERROR"] else ""]
        notes = ", ".join(n for n in notes if n)
        text = f"[{_clock(time.monotonic() - self.started)}] {ended}/{self.num_trials} trials ended"
        text += f" ({notes})" if notes else ""
        running = [f"{count[s]} {s.lower()}" for s in ("RUNNING", "PAUSED") if count[s]]
        text += f", {', '.join(running)}" if running else ""
        text += f"; {sum(self._epoch(t) for t in trials)} epochs"
        best = self._leader(trials)
        if best is not None:
            trial, (value, epoch) = best
            text += f"; best {self.metric} {value:.4f} ({trial_label(trial.config, self.factors)}, epoch {epoch})"
        return text

    # ------------------------------------------------------------------------------------------ parts
    def _observe(self, trial) -> None:
        result = trial.last_result or {}
        value, epoch = result.get(self.metric), result.get("epoch")
        if not isinstance(value, (int, float)) or value != value or not isinstance(epoch, int):
            return
        old = self.best.get(trial.trial_id)
        if old is None or is_better(value, old[0], self.mode):
            self.best[trial.trial_id] = (float(value), epoch)

    def _leader(self, trials):
        scored = [(t, self.best[t.trial_id]) for t in trials if t.trial_id in self.best]
        if not scored:
            return None
        return best_of(scored, self.mode, key=lambda item: item[1][0])

    def _epoch(self, trial) -> int:
        epoch = (trial.last_result or {}).get("epoch")
        return epoch if isinstance(epoch, int) else 0

    def _state(self, trials) -> tuple:
        return tuple(sorted((t.trial_id, t.status, self._epoch(t)) for t in trials))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:3d}:{secs:02d}"
