"""Adaptive replication: verdicts on a claims file that stay calibrated when seeds are added wave after wave.

The runner runs a study in waves. Wave 1 runs every design point with the space's seeds; after each wave the
claims file is judged (a *look*); the points of claims that are neither decided nor hopeless get another block
of seeds in the next wave; this repeats up to `Spending.looks` looks (or until no point can take more seeds).
Looking again and again inflates false calls (5% at every look of 5: 13% per pair and per file on the ablation
design), so look k judges at its own level `Spending.level(k)`, and the levels of all looks sum to the study's
alpha.

**Why it is valid (union bound).** At look k the claims still open are judged by `judge_design(...,
alpha=level(k))`: Holm over their pairs, intervals at 1 - level(k) (1 - 2 level(k) for `~`, the TOST interval).
A false call anywhere in the study is a false call at some look, so P(any) <= sum_k P(false call at look k) <=
sum_k level(k) = alpha, whatever the correlation between looks. Within a look, Holm's family is every pair of the
open claims plus every pair of a settled claim that was never shown (at p = 1): only pairs shown at an earlier look
have left it, so at the first false call every true null is still in the family, that call's p is at most
level(k) / (true nulls), and summing over looks and true nulls gives alpha. Adding seeds only to open claims does
not break this: a pair tested at look k belongs to a claim that was open at every earlier look, so both its points got
every block, and their values are exactly those of a study that always added every block (and a claim that is
decided or hopeless is never tested again). The one approximation is the pooled sd, which also pools points that
stopped early at data-dependent times; the calibration tests measure it (tests/test_sequential.py, table in
analysis/README.md, "Adaptive replication"). The same argument gives the printed intervals simultaneous
coverage: every `>`/`<` interval a pair gets at any look covers its true difference with probability >= 1 - alpha.

**States.** After its look a claim is
- `decided`: supported, reversed or equivalent. Final: it keeps that look's verdict and intervals and is not
  tested again; the pairs it showed leave Holm's family (a reversed claim's other pairs stay in it at p = 1).
- `hopeless`: not decided, and not decidable even at the maximum seeds (rule below). Final too: its points get
  no more seeds for it, it keeps `not resolved`, and its pairs stay in Holm's family at p = 1.
- `undecided`: neither; its points need more seeds.

**The hopeless rule.** With the look's pooled sd and the maximum seeds of each point (`max_seeds`), take the
difference found with 50% power, i.e. the critical difference (`analysis.power.detectable_effect(...,
power=0.5)`, at the last look's level, Bonferroni over this look's Holm family, i.e. its first step): `d` for
an order, and `e` for a tie (its one-sided tests at the last look's level). A pair can still be shown
- `a > b` (or `<`), in the claimed direction: when the one-sided 90% upper bound of the claimed-direction
  difference, s diff + t_0.9 se (s = +1 for `>`, -1 for `<`), is at least `d`; reversed: when -s diff + t_0.9 se
  is at least `d`;
- `a ~ b`: when the one-sided 90% lower bound of |diff|, max(0, |diff| - t_0.9 se), is at most margin - e.
A claim is hopeless when it can be neither supported (every pair shown at this look or still showable in the
claimed direction) nor reversed (some order pair still showable the other way). Undefined pairs (no values, df
0) never make a claim hopeless. So: even if the truth were as favourable as the data plausibly allow, the largest
study the runner may run would more likely miss it than find it. Dropping a claim cannot add false calls as long
as its pairs stay in Holm's family (at p = 1, see `_judge`): dropping them from it instead would test the
survivors, the pairs with the largest differences, at a larger level (measured: 5.3% false calls per file at 5
waves instead of 2.5%; 6-8% with a rule that gives up more readily).
It costs some power on effects near `d`, which is its purpose.

Pure functions of plain numbers: no Ray, no torch, no files.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .inference import ALPHA, DEFAULT_MARGIN, check_alpha
from .power import detectable_effect
from .verdicts import (EQUIVALENT, MIN_SEEDS, REVERSED, SUPPORTED, ClaimOrder, ClaimVerdict, Judgement, judge,
                       judge_design)

__all__ = ["POCOCK", "OBRIEN_FLEMING", "DECIDED", "HOPELESS", "UNDECIDED", "STATES", "ALL_SETTLED", "MAX_LOOKS",
           "MAX_SEEDS", "FUTILITY_CONFIDENCE", "FUTILITY_POWER", "Spending", "ClaimState", "Look", "look"]

# Spending shapes: the cumulative level after look k of K is alpha (k / K)^shape.
POCOCK = 1.0          # equal split: alpha / K at every look
OBRIEN_FLEMING = 3.0  # little early, most at the last looks (like O'Brien-Fleming's bounds)

DECIDED = "decided"      # supported, reversed or equivalent: final
HOPELESS = "hopeless"    # not decidable even at the maximum seeds: final, not resolved
UNDECIDED = "undecided"  # its points need more seeds
STATES = (DECIDED, HOPELESS, UNDECIDED)
DECISIONS = (SUPPORTED, REVERSED, EQUIVALENT)

ALL_SETTLED = "all decided or hopeless"
MAX_LOOKS = "max looks reached"
MAX_SEEDS = "max seeds reached"  # claims are open but none of their points can take more seeds

# The hopeless rule (module docstring): a one-sided 90% bound on the true difference, and the difference found
# with 50% power (the critical difference) at the maximum seeds. With 80% power instead, a tie at 3 waves of the
# ablation design is hopeless by design (a true tie is shown with ~60% power at 6 seeds, 12 on the base, at the
# last look's level): measured 31% equivalent against 56%, for about the same seeds saved on small effects.
FUTILITY_CONFIDENCE = 0.9
FUTILITY_POWER = 0.5


@dataclass(frozen=True)
class Spending:
    """How a study's `alpha` is split over at most `looks` looks: the cumulative level after look k is
    alpha (k / looks)^shape, look k's own level the increment, so the levels sum to alpha.

    The default is the equal split (`POCOCK`): every wave costs a full block of seeds on every open point, so
    a large effect should be called at wave 1 rather than wait for a look with a larger level. The
    O'Brien-Fleming-like shape (`OBRIEN_FLEMING`, alpha / 125 at look 1 of 5) calls a 6-point effect at wave 1
    in 30% of studies against 87%, and spends ~50% more seeds on it (analysis/README.md, "Adaptive
    replication")."""

    alpha: float = ALPHA
    looks: int = 3
    shape: float = POCOCK

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if isinstance(self.looks, bool) or not isinstance(self.looks, (int, np.integer)) or self.looks < 1:
            raise ValueError(f"looks must be a whole number >= 1, got {self.looks!r}")
        if (isinstance(self.shape, bool) or not isinstance(self.shape, (int, float)) or not math.isfinite(self.shape)
                or self.shape <= 0):
            raise ValueError(f"shape must be a positive number (1 equal split, 3 O'Brien-Fleming-like), "
                             f"got {self.shape!r}")

    def _check_look(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= self.looks:
            raise ValueError(f"look must be a whole number from 1 to {self.looks}, got {k!r}")
        return int(k)

    def cumulative(self, k: int) -> float:
        """The level spent by looks 1..k (0 for k = 0, alpha for k = looks)."""
        k = self._check_look(k)
        return self.alpha * (k / self.looks) ** self.shape

    def level(self, k: int) -> float:
        """Look k's own level (1 <= k <= looks): what its Holm family is judged at."""
        if self._check_look(k) == 0:
            raise ValueError(f"look must be a whole number from 1 to {self.looks}, got 0")
        return self.cumulative(k) - self.cumulative(k - 1)

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(self.level(k) for k in range(1, self.looks + 1))


@dataclass(frozen=True)
class ClaimState:
    """A claim after a look: its verdict (from the look that settled it, for a decided or hopeless claim), its
    state (`DECIDED`, `HOPELESS`, `UNDECIDED`), the look that verdict comes from, and for a hopeless claim why."""

    verdict: ClaimVerdict
    state: str
    look: int
    reason: str = ""

    @property
    def claim(self) -> ClaimOrder:
        return self.verdict.claim


@dataclass(frozen=True)
class Look:
    """The claims file after look `k`: one `ClaimState` per claim in the file's order; `judgement` is this
    look's Holm family (the claims still open before it; None when none was); `more_seeds` the design points of
    undecided claims that can take more seeds (in `values`' order; none once the study stops); `stop` why the
    study should stop ("" to go on)."""

    k: int
    spending: Spending
    claims: tuple[ClaimState, ...]
    judgement: Judgement | None
    more_seeds: tuple[str, ...]
    stop: str = ""

    @property
    def level(self) -> float:
        """The level this look was judged at (its intervals are at 1 - level, 1 - 2 level for ties)."""
        return self.spending.level(self.k)

    @property
    def verdicts(self) -> tuple[ClaimVerdict, ...]:
        return tuple(c.verdict for c in self.claims)

    def states(self, state: str) -> tuple[ClaimState, ...]:
        """The claims in `state`."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        return tuple(c for c in self.claims if c.state == state)

    def __iter__(self):
        return iter(self.claims)


def look(values: Mapping[str, ArrayLike], claims: Sequence[ClaimOrder], *, k: int, spending: Spending,
         max_seeds: int | Mapping[str, int], previous: Look | None = None, seeds: Mapping[str, int] | None = None,
         margin: float = DEFAULT_MARGIN, min_seeds: int = MIN_SEEDS) -> Look:
    """Judge the claims file at look `k` of a study spending `spending`.

    `values`: design point -> its per-seed values so far (every wave's, as `judge_design` takes them; NaN: a
    crashed seed). `claims`: the file, the same at every look. `max_seeds`: the most seeds a point may get by
    the last look (one number, or one per point). `previous`: the Look before (None at the first); its decided
    and hopeless claims are carried over untouched. `seeds`: seeds run per point (default: the length of its
    values, NaN included). `margin`, `min_seeds`: as `judge_design`. Raises ValueError for a look out of
    order, claims that differ from `previous`'s, or seeds above their maximum."""
    if not isinstance(spending, Spending):
        raise ValueError(f"spending must be a Spending, got {type(spending).__name__}")
    k = spending._check_look(k)
    if k == 0:
        raise ValueError(f"look must be a whole number from 1 to {spending.looks}, got 0")
    claims = tuple(claims)
    if previous is not None:
        if previous.spending != spending or previous.k >= k:
            raise ValueError(f"look {k} cannot follow look {previous.k} of {previous.spending}")
        if tuple(c.claim for c in previous.claims) != claims:
            raise ValueError("the claims differ from the previous look's")
    if not isinstance(values, Mapping):
        raise ValueError(f"values must map design points to arrays of per-seed values, got {type(values).__name__}")
    run = {str(p): int(np.size(v)) for p, v in values.items()}
    if seeds is not None:
        missing = [p for p in run if p not in seeds]
        if missing:
            raise ValueError(f"seeds has no entry for design point {missing[0]!r}")
        run = {p: seeds[p] for p in run}
    limit = _max_seeds(max_seeds, run)

    carried = {i: s for i, s in enumerate(previous.claims) if s.state != UNDECIDED} if previous else {}
    open_claims = [c for i, c in enumerate(claims) if i not in carried]
    judgement = None
    judged: dict[int, ClaimState] = {}
    if open_claims:
        judgement = _judge(values, open_claims, carried.values(), alpha=spending.level(k), margin=margin,
                           min_seeds=min_seeds)
        last = spending.level(spending.looks)
        family = max(1, judgement.family)
        opened = iter(judgement.claims)
        for i in range(len(claims)):
            if i in carried:
                continue
            verdict = next(opened)
            if verdict.verdict in DECISIONS:
                judged[i] = ClaimState(verdict, DECIDED, k)
                continue
            reason = _hopeless(verdict, limit, points=len(values), family=family, level=last)
            judged[i] = ClaimState(verdict, HOPELESS if reason else UNDECIDED, k, reason)
    states = tuple(carried.get(i) or judged[i] for i in range(len(claims)))

    wanted = {p for s in states if s.state == UNDECIDED for p in s.claim.levels}
    more = tuple(p for p in map(str, values) if p in wanted and run.get(p, 0) < limit[p])
    if not wanted:
        stop = ALL_SETTLED
    elif k == spending.looks:
        stop = MAX_LOOKS
    elif not more:
        stop = MAX_SEEDS
    else:
        stop = ""
    return Look(k, spending, states, judgement, () if stop else more, stop)


def _judge(values: Mapping[str, ArrayLike], claims: Sequence[ClaimOrder], settled: Iterable[ClaimState], *,
           alpha: float, margin: float, min_seeds: int) -> Judgement:
    """`judge_design` of the open claims, with Holm's family also counting every pair of a settled claim that
    was never shown (a hopeless claim's, a reversed claim's other pairs) at p = 1: such a pair can still be a
    true null, and Holm's bound (the first false rejection is at level / (true nulls) or below) needs every true
    null in the family. Pairs shown at an earlier look leave it, as in Holm's own step-down."""
    tests = judge_design(values, claims, alpha=alpha, margin=margin, min_seeds=min_seeds)
    held = [(ClaimOrder(f"{s.claim.name}: {pv.test.text}", (a, b), (r,)),
             [dataclasses.replace(pv.test, p=1.0, p_claimed=1.0)])
            for s in settled for pv, (a, r, b) in zip(s.verdict.pairs, s.claim.pairs)
            if pv.verdict not in DECISIONS and pv.test.defined]
    if not held:
        return tests
    items = [(v.claim, [pv.test for pv in v.pairs]) for v in tests.claims]
    full = judge(items + held, alpha=alpha, min_seeds=min_seeds)
    return dataclasses.replace(full, claims=full.claims[:len(claims)])


def _max_seeds(max_seeds: int | Mapping[str, int], run: Mapping[str, int]) -> dict[str, int]:
    """Each point's maximum seeds, checked against the seeds it has run."""
    if isinstance(max_seeds, Mapping):
        missing = [p for p in run if p not in max_seeds]
        if missing:
            raise ValueError(f"max_seeds has no entry for design point {missing[0]!r}")
        limit = {p: max_seeds[p] for p in run}
    else:
        limit = dict.fromkeys(run, max_seeds)
    for p, n in limit.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"max_seeds must be whole numbers >= 1, got {n!r} for {p!r}")
        if isinstance(run[p], bool) or not isinstance(run[p], (int, np.integer)) or run[p] < 0:
            raise ValueError(f"seeds must be whole numbers >= 0, got {run[p]!r} for {p!r}")
        if run[p] > n:
            raise ValueError(f"{p!r} has run {run[p]} seeds, more than its max_seeds {n}")
    return {p: int(n) for p, n in limit.items()}


def _level_seeds(level: str | Sequence[str], limit: Mapping[str, int]) -> float:
    """The seeds of one point with the variance of the level's mean at the maximum seeds (a marginal mean
    of k cells has variance sd^2 sum(1/n_i) / k^2)."""
    cells = (level,) if isinstance(level, str) else tuple(level)
    return 1 / sum(1 / (len(cells) ** 2 * limit[c]) for c in cells)


@lru_cache(maxsize=4096)
def _unit_effect(points: int, seeds_a: float, seeds_b: float, family: int, alpha: float) -> float:
    """`detectable_effect` at sd 1 (it scales with the sd); NaN when the design has no df."""
    try:
        return detectable_effect(1.0, points=max(points, 2), seeds=seeds_b, base_seeds=seeds_a, family=family,
                                 alpha=alpha, power=FUTILITY_POWER)
    except ValueError:
        return math.nan


def _hopeless(verdict: ClaimVerdict, limit: Mapping[str, int], *, points: int, family: int, level: float) -> str:
    """Why the claim cannot be decided even at the maximum seeds (the rule in the module docstring), "" when it
    still can."""
    can_support, can_reverse, stuck = True, False, []
    for pv in verdict.pairs:
        t = pv.test
        if not t.defined:
            return ""
        if pv.verdict in (SUPPORTED, EQUIVALENT):
            continue
        n_a, n_b = _level_seeds(t.a, limit), _level_seeds(t.b, limit)
        bound = float(special.stdtrit(t.df, FUTILITY_CONFIDENCE)) * t.se
        tie = t.relation == "~"
        # TOST's one-sided tests at `level` are a two-sided test at 2 level (capped: a TOST at 25% is no test).
        effect = _unit_effect(points, n_a, n_b, family, min(2 * level, 0.5) if tie else level) * t.sd
        if not math.isfinite(effect):
            return ""
        if tie:
            lower = max(0.0, abs(t.diff) - bound)
            if lower > t.margin - effect:
                can_support = False
                stuck.append(f"{t.text}: |diff| >= {lower:.2f} ({FUTILITY_CONFIDENCE:.0%} bound), but a tie within "
                             f"+-{t.margin:g} is shown with {FUTILITY_POWER:.0%} power only up to "
                             f"{max(0.0, t.margin - effect):.2f}")
            continue
        sign = 1 if t.relation == ">" else -1
        toward, away = sign * t.diff + bound, -sign * t.diff + bound
        if toward < effect:
            can_support = False
            stuck.append(f"{t.text}: the claimed difference is at most {toward:.2f} ({FUTILITY_CONFIDENCE:.0%} "
                         f"bound), the difference found with {FUTILITY_POWER:.0%} power {effect:.2f}")
        can_reverse |= away >= effect
    if can_support or can_reverse:
        return ""
    seeds = ", ".join(f"{p} {limit[p]}" for p in verdict.claim.levels)
    return "; ".join(stuck) + f" (at the maximum seeds: {seeds}; level {level:.3g}, {family} tests)"
