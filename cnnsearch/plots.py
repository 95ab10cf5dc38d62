"""Figures for one training run: learning curves and a confusion matrix (matplotlib, PNG).

`matplotlib.figure.Figure`, not pyplot: writing a PNG needs no backend and no display, and importing
this module leaves a notebook's backend alone.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_curves", "plot_confusion"]


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Figure:
    """Train and validation loss (left) and accuracy (right) against epoch (whole-number ticks); returns
    the figure it saved."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        ax_loss.plot(epochs, [h[key] for h in history], marker=".", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "val")):
        ax_acc.plot(epochs, [100 * h[key] for h in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_confusion(confusion, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts annotated
    when there are few classes."""
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = max(5.0, 0.45 * k + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
