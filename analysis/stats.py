"""Bootstrap confidence intervals over seeds: the only statistics the verdicts rest on.

A group is one array of per-seed values, or several arrays ("cells", e.g. one per model in a grid)
whose means are averaged; seeds are resampled with replacement within each cell, so a marginal mean
keeps its mix of cells. With a single value in some cell there is nothing to resample: the interval is
undefined (NaN bounds), and a verdict resting on it is inconclusive.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "bootstrap_diff", "bootstrap_mean", "group_mean", "N_RESAMPLES", "CONFIDENCE"]

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0  # fixed: the same tables always give the same intervals


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval; `low`/`high` are NaN when undefined."""

    value: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def sign(self) -> int:
        """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 or is undefined."""
        if not self.defined:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def _cells(values) -> list[np.ndarray]:
    """One array, or a sequence of arrays (cells), as a list of finite float arrays."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        cells = [values]
    elif isinstance(values, Sequence) and values and all(np.ndim(v) == 1 for v in values):
        cells = list(values)
    else:
        cells = [np.ravel(np.asarray(values, dtype=float))]
    out = [np.asarray(c, dtype=float) for c in cells]
    out = [c[np.isfinite(c)] for c in out]
    return [c for c in out if c.size]


def _resampled_means(cells: list[np.ndarray], rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """(n_resamples,) group means: each cell resampled with replacement, cell means averaged."""
    means = np.empty((len(cells), n_resamples))
    for i, cell in enumerate(cells):
        idx = rng.integers(0, cell.size, size=(n_resamples, cell.size))
        means[i] = cell[idx].mean(axis=1)
    return means.mean(axis=0)


def _point(cells: list[np.ndarray]) -> float:
    return float(np.mean([c.mean() for c in cells])) if cells else math.nan


def group_mean(values) -> float:
    """The mean of a group: of its values, or the mean of its cells' means (NaN if empty)."""
    return _point(_cells(values))


def bootstrap_diff(a, b, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = SEED) -> Estimate:
    """mean(a) - mean(b) with a percentile bootstrap interval. `a` and `b` are per-seed values, or
    sequences of cells (see the module docstring). NaNs are dropped. Deterministic for a given seed."""
    cells_a, cells_b = _cells(a), _cells(b)
    value = _point(cells_a) - _point(cells_b)
    if not cells_a or not cells_b or min(c.size for c in [*cells_a, *cells_b]) < 2:
        return Estimate(value, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    diffs = _resampled_means(cells_a, rng, n_resamples) - _resampled_means(cells_b, rng, n_resamples)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))


def bootstrap_mean(a, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = SEED) -> Estimate:
    """mean(a) with a percentile bootstrap interval (same conventions as `bootstrap_diff`)."""
    cells = _cells(a)
    value = _point(cells)
    if not cells or min(c.size for c in cells) < 2:
        return Estimate(value, math.nan, math.nan)
    means = _resampled_means(cells, np.random.default_rng(seed), n_resamples)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))
