"""The runner's progress: one line when something changed, at most every `every_s` seconds, instead of
Tune's table every 30 s (`--progress table` brings the table back).

    [  3:12] 7/18 trials ended (5 stopped early), 2 running; 31 epochs; best val_acc 0.4410 (base seed 1, epoch 4)
"""
from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import ProgressReporter

from search_spaces import level_label

__all__ = ["ProgressLine", "trial_label"]


def trial_label(config: dict[str, Any], factors: tuple[tuple[str, bool, bool], ...]) -> str:
    """How a trial is named in progress lines: its design point, or its factors' values, and its seed.
    `factors`: (name, continuous, multi_key) of each factor of the space."""
    point = config.get("design_point")
    if isinstance(point, dict):
        label = point.get("label", "?")
    else:  # grid and sampled designs: Tune's config holds each factor's level (a mapping for a multi-key one)
        label = ",".join(f"{name}={config.get(name):.3g}" if continuous else
                         level_label(config.get(name)) if multi_key else f"{name}={level_label(config.get(name))}"
                         for name, continuous, multi_key in factors) or "base"
    return f"{label} seed {config.get('seed', 0)}"


class ProgressLine(ProgressReporter):
    """Tune calls `should_report` after every state change and result; this prints a line when the
    counts or the best value changed and `every_s` has passed since the last line, and always at the end."""

    def __init__(self, plan, *, every_s: float = 15.0):
        # Plain values only, not the plan: Tune pickles the reporter into tuner.pkl, and --resume admits
        # only the classes it knows there (tune/state.py).
        self.every_s = every_s
        self.metric, self.mode = plan.space.metric, plan.space.mode
        self.num_trials, self.epochs = plan.num_trials, plan.epochs
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
        better = old is None or (value > old[0] if self.mode == "max" else value < old[0])
        if better:
            self.best[trial.trial_id] = (float(value), epoch)

    def _leader(self, trials):
        scored = [(t, self.best[t.trial_id]) for t in trials if t.trial_id in self.best]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda item: item[1][0])

    def _epoch(self, trial) -> int:
        epoch = (trial.last_result or {}).get("epoch")
        return epoch if isinstance(epoch, int) else 0

    def _state(self, trials) -> tuple:
        return tuple(sorted((t.trial_id, t.status, self._epoch(t)) for t in trials))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:3d}:{secs:02d}"
