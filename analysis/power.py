"""Design sizes for claim checking: what a one-at-a-time design can detect with the design-pooled t test.

The comparison is a point against the shared base point: se = sd * sqrt(1/seeds + 1/base_seeds) on
df = (points - 1)(seeds - 1) + (base_seeds - 1). A pair is found when the test rejects in the claimed
direction at alpha / (2 family), two-sided alpha split over `family` tests: Bonferroni, the first step of
Holm, so the effects here are upper bounds for a file judged with Holm (its later steps test at larger
levels). Power is exact under the model (noncentral t), not a normal approximation.

Effects and sd in points. Measured seed sd: 1.3 points at the CPU budget (results/ablation-cpu-fifo, 9 points
x 2 seeds at epoch 8, df 9).
"""
from __future__ import annotations

import math

from scipy import optimize, special, stats

from .inference import ALPHA, check_alpha, check_fraction

__all__ = ["POWER", "pair_power", "detectable_effect", "seeds_needed"]

POWER = 0.8


def _design(sd: float, points: int, seeds: int, base_seeds: int | None, family: int, alpha: float
            ) -> tuple[float, int, float]:
    """(se, df, critical t) of a point-against-base comparison."""
    base_seeds = seeds if base_seeds is None else base_seeds
    if not isinstance(sd, (int, float)) or not math.isfinite(sd) or sd <= 0:
        raise ValueError(f"sd must be a positive number of points, got {sd!r}")
    if points < 2 or seeds < 1 or base_seeds < 1 or family < 1:
        raise ValueError(f"need points >= 2, seeds >= 1, base_seeds >= 1 and family >= 1, got points {points}, "
                         f"seeds {seeds}, base_seeds {base_seeds}, family {family}")
    alpha = check_alpha(alpha)
    df = (points - 1) * (seeds - 1) + (base_seeds - 1)
    if df < 1:
        raise ValueError("one seed everywhere: no estimate of seed noise (df 0)")
    se = sd * math.sqrt(1 / seeds + 1 / base_seeds)
    return se, df, float(special.stdtrit(df, 1 - alpha / (2 * family)))


def pair_power(effect: float, sd: float, *, points: int, seeds: int, base_seeds: int | None = None, family: int = 1,
               alpha: float = ALPHA) -> float:
    """Probability that a true difference of `effect` points between a point and the base is called
    `supported` (seed sd `sd`; `points` design points including the base, `seeds` each, `base_seeds` on the
    base, default `seeds`; Bonferroni over `family` tests)."""
    se, df, critical = _design(sd, points, seeds, base_seeds, family, alpha)
    return float(stats.nct.sf(critical, df, effect / se))


def detectable_effect(sd: float, *, points: int, seeds: int, base_seeds: int | None = None, family: int = 1,
                      alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference (points) found with probability `power` (arguments as `pair_power`)."""
    power = check_fraction("power", power)
    se, df, critical = _design(sd, points, seeds, base_seeds, family, alpha)
    upper = critical + 10.0
    while stats.nct.sf(critical, df, upper) < power:  # heavy tails at small df need a far noncentrality
        upper *= 2
    ncp = optimize.brentq(lambda d: stats.nct.sf(critical, df, d) - power, 0.0, upper, xtol=1e-10)
    return float(ncp * se)


def seeds_needed(effect: float, sd: float, *, points: int, base_extra: int = 0, family: int = 1,
                 alpha: float = ALPHA, power: float = POWER, max_seeds: int = 1000) -> int:
    """The fewest seeds per point (the base gets `base_extra` more) that find a true difference of `effect`
    points with probability `power`. Raises ValueError when `max_seeds` are not enough or effect <= 0."""
    if not isinstance(effect, (int, float)) or not effect > 0:
        raise ValueError(f"effect must be a positive number of points, got {effect!r}")
    power = check_fraction("power", power)
    for seeds in range(2, max_seeds + 1):
        if pair_power(effect, sd, points=points, seeds=seeds, base_seeds=seeds + base_extra, family=family,
                      alpha=alpha) >= power:
            return seeds
    raise ValueError(f"{max_seeds} seeds per point do not find {effect:g} points at sd {sd:g} with power {power:g}")
