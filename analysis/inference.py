"""Design-pooled t inference: two levels' difference with a t interval whose seed noise is pooled over
every design point of the experiment.

Model: each run's metric is its design point's mean plus seed noise, normal with one standard deviation
for every point. A point's seeds estimate that sd with n_i - 1 degrees of freedom; pooling all points gives
df = sum(n_i - 1) (9 points x 2 seeds: df 9), where a per-pair test has 2 (Student) or ~1 (Welch) and a
percentile bootstrap of 2 seeds has no calibration at all (issue 11). A level is one point, or several
(the cells of a marginal mean, averaged with equal weight).

Values are in accuracy points (%) here and in every result: the caller multiplies fractions by 100, so
margins and effects read as points. Pure functions of plain numbers: nothing here knows the experiment
folder. Holm's step-down across the tests of a claims file is `holm`; verdicts are `analysis.verdicts`.

Calibration (tests/test_calibration.py, 2,000 synthetic experiments per cell): see `analysis.verdicts`.

Robustness: the pool assumes one seed sd for all points. A point far noisier than the rest is flagged
(`PooledSD.noisy`, an F test) and its pairs carry a note, but keep their verdicts: the check has little power
at 2 seeds, and in a homogeneous design it fires by chance in up to 5% of runs. Measured on the ablation
design with no effect and one point at 3 times the others' sd: pairs touching that point are falsely called
24% of the time (2 or 5 seeds; the point is flagged in 25% / 74% of runs), the other pairs 2% / 1% (the
inflated pool makes them conservative), and Holm keeps any false call in the file at 5%. A diverged seed (a
value tens of points off) inflates the pool so much that nothing is resolved: safe, but the caller should
say so.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = ["ALPHA", "DEFAULT_MARGIN", "RELATIONS", "PooledSD", "PairTest", "pool_sd", "compare_pair", "holm",
           "check_alpha", "check_fraction", "check_margin"]

ALPHA = 0.05  # family-wise error rate of a claims file
# Equivalence margin (points) for `a ~ b`: the same 2 points the claim spaces are sized to detect
# (issue 11), so "equivalent" means "closer than the smallest effect this project calls an effect".
DEFAULT_MARGIN = 2.0
RELATIONS = (">", "<", "~")  # a's mean above b's, below b's, within the margin of b's
# A point's seed variance far above the pool's (a diverged seed, an unstable level): F test of the point
# against the other points, Bonferroni over the points so that homogeneous designs are flagged <= 5% of the time.
NOISY_ALPHA = 0.05

Level = str | Sequence[str]  # a design point's name, or the cells of a marginal mean


@dataclass(frozen=True)
class PooledSD:
    """Seed noise pooled over design points: `sd` in points (NaN when df is 0, i.e. one seed everywhere),
    `df` = sum over points of (seeds - 1), `points` with at least one value; `noisy` names the points whose
    own seed variance is implausibly far above the rest of the pool."""

    sd: float
    df: int
    points: int
    noisy: tuple[str, ...] = ()

    @property
    def defined(self) -> bool:
        return self.df > 0 and math.isfinite(self.sd)


@dataclass(frozen=True)
class PairTest:
    """Level `a` against level `b` of a claim `a <relation> b`, before any multiplicity correction.

    diff = mean_a - mean_b (points; a level's mean is the mean of its cells' means); se = sd *
    sqrt(sum 1/(k^2 n_i)) over both levels' k cells of n_i seeds (sqrt(1/n_a + 1/n_b) for two points);
    t on the pooled df. `low`/`high`: the `confidence` interval of diff (1 - alpha two-sided for `>` and
    `<`, whose calls are its two one-sided tests at alpha/2; 1 - 2 alpha for `~`, where TOST at alpha is
    the same as this interval lying inside +-margin). `p_claimed`: one-sided p in the claimed direction
    (`~`: the TOST p, the larger of its two one-sided p); `p`: what enters Holm (`>`/`<`: two-sided,
    2 min(one-sided); `~`: the TOST p). NaN statistics mean the test is undefined; `note` says why.
    `n_a`/`n_b` count values, `seeds` is the fewest seeds of any point in the pair. `epoch` and `final`
    (compared at the experiment's last epoch) are the caller's, kept for the verdict."""

    a: Level
    relation: str
    b: Level
    n_a: int
    n_b: int
    seeds: int
    mean_a: float
    mean_b: float
    diff: float
    se: float
    sd: float
    df: int
    low: float
    high: float
    confidence: float
    margin: float | None
    p_claimed: float
    p: float
    epoch: int | None = None
    final: bool = True
    note: str = ""

    @property
    def defined(self) -> bool:
        return math.isfinite(self.p)

    @property
    def text(self) -> str:
        return f"{_label(self.a)} {self.relation} {_label(self.b)}"


def check_fraction(name: str, value: float) -> float:
    """`value` (a level such as alpha, or a power) as a float strictly between 0 and 1, or ValueError."""
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_alpha(alpha: float) -> float:
    return check_fraction("alpha", alpha)


def check_margin(margin: float) -> float:
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be a positive number of points, got {margin!r}")
    return float(margin)


def _label(level: Level) -> str:
    return level if isinstance(level, str) else "(" + " + ".join(level) + ")"


def _clean(name: str, values: ArrayLike) -> np.ndarray:
    """A point's finite values as a 1-D float array (NaN: a crashed or missing run, dropped)."""
    array = np.asarray(values, dtype=float)
    if array.ndim > 1:
        raise ValueError(f"values[{name!r}]: expected a 1-D array of per-seed values, got shape {array.shape}")
    array = array.reshape(-1)
    return array[np.isfinite(array)]


def _check_values(values: Mapping[str, ArrayLike]) -> None:
    if not isinstance(values, Mapping):
        raise ValueError(f"values must map design points to arrays of per-seed values, got {type(values).__name__}")


def pool_sd(values: Mapping[str, ArrayLike]) -> PooledSD:
    """The seed sd pooled over every design point in `values` (point -> per-seed values at one epoch).

    Points with one value give no variance and add no df. A point is `noisy` when an F test of its
    variance against the other points' pool has p < 0.05 / (points tested): the pool then understates
    that point's noise, so its comparisons carry a note (see `compare_pair`). It is not dropped from the
    pool: dropping the largest variance after looking at it would make every other interval too narrow."""
    _check_values(values)
    names = [str(k) for k in values]
    arrays = [_clean(k, v) for k, v in values.items()]
    n = np.array([a.size for a in arrays])
    dof = np.maximum(n - 1, 0)
    df = int(dof.sum())
    if df == 0:
        return PooledSD(math.nan, 0, int(np.count_nonzero(n)))
    # Per-point sums of squares in a few vector operations (this runs thousands of times in the calibration tests).
    group = np.repeat(np.arange(n.size), n)
    flat = np.concatenate(arrays)
    means = np.bincount(group, flat, minlength=n.size) / np.maximum(n, 1)
    ss = np.bincount(group, (flat - means[group]) ** 2, minlength=n.size)
    total = float(ss.sum())
    return PooledSD(math.sqrt(total / df), df, int(np.count_nonzero(n)), _noisy(names, ss, dof, df, total))


def _noisy(names: list[str], ss: np.ndarray, dof: np.ndarray, df: int, total: float) -> tuple[str, ...]:
    """The points whose variance an F test against the rest of the pool finds too large (Bonferroni)."""
    rest_df = df - dof
    tested = (dof >= 1) & (rest_df >= 1)
    if not tested.any():
        return ()
    with np.errstate(divide="ignore", invalid="ignore"):  # a rest of zero variance: F infinite, p 0
        f = (ss / np.maximum(dof, 1)) / ((total - ss) / np.maximum(rest_df, 1))
    p = special.fdtrc(np.maximum(dof, 1), np.maximum(rest_df, 1), np.where(ss > 0, f, 0.0))
    flagged = tested & (ss > 0) & (p < NOISY_ALPHA / np.count_nonzero(tested))
    return tuple(name for name, hit in zip(names, flagged) if hit)


def _cells(values: Mapping[str, ArrayLike], level: Level) -> dict[str, np.ndarray]:
    """A level's cells (one design point, or several) and their values."""
    cells = (level,) if isinstance(level, str) else tuple(level)
    if not cells:
        raise ValueError("a level needs at least one design point")
    unknown = [c for c in cells if c not in values]
    if unknown:
        raise ValueError(f"no design point {unknown[0]!r} in values (points: {', '.join(map(str, values))})")
    return {c: _clean(c, values[c]) for c in cells}


def _mean(cells: dict[str, np.ndarray]) -> float:
    """The level's mean: the mean of its cells' means (NaN if a cell has no values)."""
    if not all(v.size for v in cells.values()):
        return math.nan
    return sum(float(v.sum()) / v.size for v in cells.values()) / len(cells)


def compare_pair(values: Mapping[str, ArrayLike], a: Level, relation: str, b: Level, *,
                 pooled: PooledSD | None = None, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA,
                 epoch: int | None = None, final: bool = True) -> PairTest:
    """Test the claim `a <relation> b` on `values` (every design point's per-seed values at the epoch of the
    comparison, so that the pool has them all; NaN values are dropped). `pooled`: `pool_sd(values)`, passed
    to save recomputing it; `margin` (points) only matters for `~`; `alpha` sets the interval's confidence.
    `epoch`/`final` are stored for the verdict. Raises ValueError for an unknown point or relation."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
    alpha = check_alpha(alpha)
    margin = check_margin(margin)
    _check_values(values)
    cells_a, cells_b = _cells(values, a), _cells(values, b)
    pooled = pool_sd(values) if pooled is None else pooled
    tie = relation == "~"
    common = dict(a=a if isinstance(a, str) else tuple(a), relation=relation, b=b if isinstance(b, str) else tuple(b),
                  n_a=sum(v.size for v in cells_a.values()), n_b=sum(v.size for v in cells_b.values()),
                  seeds=min(v.size for v in (*cells_a.values(), *cells_b.values())),
                  mean_a=_mean(cells_a), mean_b=_mean(cells_b), sd=pooled.sd, df=pooled.df,
                  confidence=1 - 2 * alpha if tie else 1 - alpha, margin=margin if tie else None, epoch=epoch,
                  final=final)
    diff = common["mean_a"] - common["mean_b"]
    empty = [c for c, v in (*cells_a.items(), *cells_b.items()) if v.size == 0]
    if empty or not pooled.defined:
        note = (f"no values at {', '.join(dict.fromkeys(empty))}" if empty else
                "one seed at every design point: no estimate of seed noise (df 0)")
        return PairTest(**common, diff=diff, se=math.nan, low=math.nan, high=math.nan, p_claimed=math.nan,
                        p=math.nan, note=note)
    # Var(mean of k cell means) = sd^2 sum(1/n_i) / k^2, for each level.
    se = pooled.sd * math.sqrt(sum(1 / v.size for v in cells_a.values()) / len(cells_a) ** 2 +
                               sum(1 / v.size for v in cells_b.values()) / len(cells_b) ** 2)
    df = pooled.df

    def t(x: float) -> float:  # se 0 (identical values at every point): a difference is exact
        return x / se if se else (math.copysign(math.inf, x) if x else 0.0)

    if tie:
        # TOST: H0 diff <= -margin and H0 diff >= +margin; equivalence needs both rejected, p is the larger.
        p_claimed = p = float(max(special.stdtr(df, -t(diff + margin)), special.stdtr(df, t(diff - margin))))
        half = float(special.stdtrit(df, 1 - alpha)) * se
    else:
        # One-sided p of "a above b" and of "a below b", each computed directly (1 - p loses tiny p-values).
        above, below = float(special.stdtr(df, -t(diff))), float(special.stdtr(df, t(diff)))
        p_claimed = above if relation == ">" else below
        p = min(1.0, 2 * min(above, below))
        half = float(special.stdtrit(df, 1 - alpha / 2)) * se
    noisy = [c for c in (*cells_a, *cells_b) if c in pooled.noisy]
    note = (f"seed spread at {', '.join(noisy)} far above the other points' (F test): the pooled sd may "
            f"understate its noise" if noisy else "")
    return PairTest(**common, diff=diff, se=se, low=diff - half, high=diff + half, p_claimed=p_claimed, p=p,
                    note=note)


def holm(p: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest of m becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting adjusted p <= alpha controls the family-wise
    error at alpha under any dependence. NaN entries are not in the family and stay NaN."""
    p = np.asarray(p, dtype=float)
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    q = p[finite]
    order = np.argsort(q, kind="stable")
    steps = np.minimum(1.0, (q.size - np.arange(q.size)) * q[order])
    adjusted = np.empty_like(q)
    adjusted[order] = np.maximum.accumulate(steps)
    out[finite] = adjusted
    return out
