"""Figures of an experiment (matplotlib). Each function returns its Figure; given `path`, it also writes
a PNG there (for reports); in a notebook, `display(fig)` (or a cell's last value) shows it.

Figures are `matplotlib.figure.Figure`s, not pyplot's: they need no backend, so importing this never
changes a notebook's, and a headless report needs no display.

A single run's curves and the confusion matrix come from `cnnsearch.plots` (plot_curves, plot_confusion).
"""
from __future__ import annotations

import math
import os

import pandas as pd

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .costs import alive_per_epoch
from .curves import critical_epochs, level_curves
from .display import metric_label, scale
from .load import Experiment

__all__ = ["plot_level_curves", "plot_level_effects", "plot_asha_rungs", "plot_overfitting", "plot_importance"]


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)


def _finish(fig, path: str | os.PathLike | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_level_curves(experiment: Experiment, factor: str, path: str | os.PathLike | None = None):
    """Val accuracy and val loss against epoch, one line per level of `factor`: mean over its trials,
    band = range over them."""
    curves = level_curves(experiment, factor, metrics=("val_acc", "val_loss"))
    labels = experiment.factor(factor).level_labels()
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("val_acc", "val_loss")):
        k = scale(metric)
        for level, rows in curves[curves["metric"] == metric].groupby("level", sort=False):
            line, = ax.plot(rows["epoch"], k * rows["mean"], marker=".", label=f"{factor}={labels.get(level, level)}")
            ax.fill_between(rows["epoch"], k * rows["low"], k * rows["high"], color=line.get_color(), alpha=0.2)
        ax.set(xlabel="epoch", ylabel=metric_label(metric))
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{factor}: mean over seeds, band = range (later epochs: only the trials ASHA kept)", fontsize=10)
    return _finish(fig, path)


def plot_level_effects(table: pd.DataFrame, path: str | os.PathLike | None = None, *, metric: str = "val_acc"):
    """A factor's levels (one `effects.level_effects` table): mean at the compared epoch with its 95%
    bootstrap interval; the reference level's mean as a dashed line."""
    k = scale(metric)
    factor = table["factor"].iloc[0] if len(table) else ""
    fig = Figure(figsize=(max(4.5, 1.1 * len(table) + 2), 4))
    ax = fig.subplots()
    x = range(len(table))
    mean = k * table["mean"].astype(float)
    low = (mean - k * table["mean_low"].astype(float)).fillna(0).clip(lower=0)
    high = (k * table["mean_high"].astype(float) - mean).fillna(0).clip(lower=0)
    ax.errorbar(list(x), mean, yerr=[low, high], fmt="o", capsize=5)
    if len(table):
        ax.axhline(k * float(table["reference_mean"].iloc[0]), color="grey", linestyle="--", linewidth=1,
                   label=f"reference ({table['reference'].iloc[0]})")
        ax.legend(fontsize=8)
    ticks = [f"{lv}\nepoch {ep}, n={n}" for lv, ep, n in zip(table["level"], table["epoch"], table["n"])]
    long = max((len(str(lv)) for lv in table["level"]), default=0) > 12
    ax.set_xticks(list(x), ticks, fontsize=8, rotation=20 if long else 0, ha="right" if long else "center")
    ax.set_xlim(-0.5, len(table) - 0.5)
    ax.set(ylabel=metric_label(metric), title=f"{factor}: mean and 95% bootstrap CI at equal epoch")
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, path)


def plot_asha_rungs(experiment: Experiment, path: str | os.PathLike | None = None):
    """Trials alive at each epoch, the scheduler's rungs (ASHA's, HyperBand's) highlighted."""
    alive = alive_per_epoch(experiment)
    fig = Figure(figsize=(max(5, 0.35 * len(alive) + 3), 3.5))
    ax = fig.subplots()
    colors = ["tab:orange" if r else "tab:blue" for r in alive["rung"]]
    bars = ax.bar(alive["epoch"], alive["alive"], color=colors)
    ax.bar_label(bars, fontsize=7)
    record = experiment.record
    rungs = record.rungs
    what = (f"{record.scheduler_entry.title} rungs (orange) at epochs {', '.join(map(str, rungs))}: "
            f"{record.scheduler_entry.terms(record.settings)}") if rungs else f"scheduler {record.scheduler}: no rungs"
    ax.set(xlabel="epoch", ylabel="trials alive", title=what)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.title.set_fontsize(9)
    return _finish(fig, path)


def plot_overfitting(experiment: Experiment, path: str | os.PathLike | None = None, *, by: str = "label",
                     max_panels: int = 12):
    """Train against val loss per group (mean over its trials), with the critical epoch (where val loss
    starts rising) marked."""
    table = critical_epochs(experiment, by=by).head(max_panels)
    n = max(len(table), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (_, row) in zip(axes.flat, table.iterrows()):
        curve = experiment.epochs[experiment.epochs[by] == row[by]].groupby("epoch")[["train_loss", "val_loss"]].mean()
        ax.plot(curve.index, curve["train_loss"], marker=".", label="train")
        ax.plot(curve.index, curve["val_loss"], marker=".", label="val")
        if pd.notna(row["critical_epoch"]):
            ax.axvline(int(row["critical_epoch"]), color="red", linestyle="--", linewidth=1,
                       label=f"critical epoch {int(row['critical_epoch'])}")
        ax.set_title(str(row[by]), fontsize=9)
        ax.set(xlabel="epoch", ylabel="loss", xlim=(0.5, experiment.max_epochs + 0.5))
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(table):]:
        ax.axis("off")
    return _finish(fig, path)


def plot_importance(importance: pd.Series, path: str | os.PathLike | None = None):
    """Horizontal bars: each factor's share of the explained variance (Optuna's evaluator)."""
    series = importance.sort_values()
    fig = Figure(figsize=(6, 0.4 * len(series) + 1.5))
    ax = fig.subplots()
    ax.barh(series.index.astype(str), series.to_numpy())
    ax.set(xlabel="importance (fraction)", title=importance.name or "parameter importance")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, axis="x")
    return _finish(fig, path)
