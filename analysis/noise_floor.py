"""A noise floor for parameter importance: what the same importance method reports when no factor matters.

fANOVA's importances sum to 1, so with no effect at all they still name a "most important" factor (issue 11:
`recipe 0.89, model 0.11` on pure noise). Permuting the metric over the trials keeps the design (which
configs ran, how often) and the metric's distribution but breaks every link between them; the importances of
K permuted data sets show how large each factor's importance gets by chance. The floor is the upper
`quantile` of a factor's permuted importances, taken as an order statistic so that "above the floor" is an
exact permutation test at level 1 - quantile: with no effect, a factor is above it at most 5% of the time
(per factor, not corrected over factors: with k null factors about k x 5% of runs flag one; the permutation
p lets a caller correct).

Generic: `importance` is any function of (configs, values) returning factor -> importance, e.g. a wrapper
around `optuna.importance.get_param_importances`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["FactorImportance", "importance_floor", "PERMUTATIONS", "QUANTILE"]

PERMUTATIONS = 99  # with 99, the permutation p-value (1 + hits) / (K + 1) has steps of 0.01
QUANTILE = 0.95

Importance = Callable[[Sequence[Mapping[str, Any]], np.ndarray], Mapping[str, float]]


@dataclass(frozen=True)
class FactorImportance:
    """One factor: `importance` on the real metric; `floor`: the m-th largest of its importances over the K
    permutations, m = floor((1 - quantile)(K + 1)) (the 5th largest of 99 for 0.95); `p` = (1 + permutations
    at least as large) / (1 + K); `above`: importance > floor, the same as p <= 1 - quantile."""

    factor: str
    importance: float
    floor: float
    p: float
    above: bool


def importance_floor(importance: Importance, configs: Sequence[Mapping[str, Any]], values: ArrayLike, *,
                     permutations: int = PERMUTATIONS, quantile: float = QUANTILE, seed: int = 0
                     ) -> tuple[FactorImportance, ...]:
    """Each factor's observed importance against its permutation floor, highest importance first.

    `configs`: one mapping of factor -> level per trial; `values`: the trials' metric at one epoch (same
    order). `importance(configs, values)` is called once on the real values and `permutations` times on
    values shuffled over trials (a fixed `seed`, so the floor is reproducible); a factor missing from a
    result counts as 0."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size != len(configs):
        raise ValueError(f"values must be one number per config ({len(configs)}), got shape {values.shape}")
    if not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be a positive integer, got {permutations!r}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    rank = math.floor((1 - quantile) * (permutations + 1) + 1e-9)  # the floor is the rank-th largest
    if rank < 1:
        raise ValueError(f"{permutations} permutations cannot reach the {quantile:g} quantile: "
                         f"use at least {math.ceil(1 / (1 - quantile) - 1 - 1e-9)}")
    observed = dict(importance(configs, values))
    rng = np.random.default_rng(seed)
    null = [importance(configs, rng.permutation(values)) for _ in range(permutations)]
    factors = list(dict.fromkeys([*observed, *(k for result in null for k in result)]))
    out = []
    for factor in factors:
        value = float(observed.get(factor, 0.0))
        permuted = np.array([float(result.get(factor, 0.0)) for result in null])
        floor = float(np.sort(permuted)[-rank])
        p = (1 + int(np.count_nonzero(permuted >= value))) / (1 + permutations)
        out.append(FactorImportance(factor, value, floor, p, value > floor))
    return tuple(sorted(out, key=lambda f: -f.importance))
