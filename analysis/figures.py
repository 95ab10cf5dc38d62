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

__all__ = ["plot_level_curves", "plot_level_effects", "plot_asha_rungs", "plot_overfitting", "plot_importance",
           "plot_looks"]


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
    stops = experiment.record.scheduler_entry.stops_early
    fig.suptitle(f"{factor}: mean over seeds, band = range" + (" (later epochs: the trials not stopped)" if stops else ""),
                 fontsize=10)
    return _finish(fig, path)


def plot_level_effects(table: pd.DataFrame, path: str | os.PathLike | None = None, *, metric: str = "val_acc"):
    """A factor's levels against its reference (one `comparisons.level_effects` table): each difference at the
    epoch its test used (on the tick), with its 95% interval (design-pooled t, not corrected)."""
    unit = " (points)" if scale(metric) == 100 else ""
    factor = table["factor"].iloc[0] if len(table) else ""
    reference = table["reference"].iloc[0] if len(table) else ""
    fig = Figure(figsize=(max(4.5, 1.2 * len(table) + 2.5), 4))
    ax = fig.subplots()
    x = list(range(len(table)))
    diff = table["diff"].astype(float)
    low = (diff - table["low"].astype(float)).fillna(0).clip(lower=0)
    high = (table["high"].astype(float) - diff).fillna(0).clip(lower=0)
    ax.errorbar(x, diff, yerr=[low, high], fmt="o", capsize=5)
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ticks = [f"{lv}\nepoch {ep}, n={n}/{nr}" for lv, ep, n, nr in
             zip(table["level"], table["epoch"], table["n"], table["n_reference"])]
    long = max((len(str(lv)) for lv in table["level"]), default=0) > 12
    ax.set_xticks(x, ticks, fontsize=8, rotation=20 if long else 0, ha="right" if long else "center")
    ax.set_xlim(-0.5, len(table) - 0.5)
    ax.set_ylabel(f"{metric} minus {reference}{unit}", fontsize=9)
    ax.set_title(f"{factor}: each level minus {reference}, 95% CI,\nat the epoch on the tick", fontsize=9)
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


def plot_importance(importance: pd.DataFrame, path: str | os.PathLike | None = None, *, title: str = ""):
    """Horizontal bars: each factor's importance (fraction of explained variance), with its noise floor (the
    95% quantile of its importances with the metric shuffled over trials) as a black tick; grey bars: factors
    that do not matter after Holm's correction. `importance`: `importance.importance_with_floor`'s table."""
    table = importance.iloc[::-1]
    fig = Figure(figsize=(6, 0.45 * len(table) + 1.6))
    ax = fig.subplots()
    y = list(range(len(table)))
    ax.barh(y, table["importance"].to_numpy(), color=["tab:blue" if m else "tab:grey" for m in table["matters"]])
    ax.scatter(table["floor"].to_numpy(), y, marker="|", s=400, color="black", label="noise floor (95%)", zorder=3)
    ax.set_yticks(y, table["factor"].astype(str))
    ax.set_xlabel("importance (fraction); grey: does not matter (Holm)")
    ax.set_title(title or "parameter importance", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _finish(fig, path)


def plot_looks(looks: list[dict], path: str | os.PathLike | None = None):
    """Adaptive replication: each claim pair's interval (points) at each look it was tested, narrowing as seeds
    are added; `looks` as the runner's ledger keeps them (analysis.adaptive.WaveLook.to_json)."""
    rows = pd.DataFrame([r for look in looks for r in look["rows"]])
    pairs = list(dict.fromkeys(rows["pair"])) if len(rows) else []
    fig = Figure(figsize=(7, 0.45 * max(3, len(pairs)) + 1))
    ax = fig.add_subplot()
    waves = sorted(rows["look"].unique()) if len(rows) else []
    for j, wave in enumerate(waves):
        shown = rows[(rows["look"] == wave) & rows["low"].notna()]
        y = [pairs.index(p) + (j - (len(waves) - 1) / 2) * 0.8 / max(1, len(waves)) for p in shown["pair"]]
        ax.errorbar(shown["diff"], y, xerr=[shown["diff"] - shown["low"], shown["high"] - shown["diff"]], fmt="o",
                    capsize=3, label=f"look {wave}")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(pairs)), pairs)
    ax.invert_yaxis()
    ax.set_xlabel("difference (points), interval at the look's level")
    if waves:
        ax.legend(fontsize="small")
    return _finish(fig, path)
