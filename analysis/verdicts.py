"""Verdicts on a claims file from design-pooled t tests, with Holm's correction across the whole file.

A claim is a chain of levels joined by relations, e.g. `0.0 > 0.4 > 0.8`, `sgd_1e-2 ~ adam_1e-3 > sgd_1e-3`
or, for a loss, `a < b`. Each adjacent pair is one hypothesis (`analysis.inference.compare_pair`):

- `a > b` / `a < b`: the difference's 95% t interval, read as two one-sided tests at 2.5% each: `supported`
  when it lies on the claimed side of 0, `reversed` when on the other. With no effect a pair is called
  (either way) 5% of the time.
- `a ~ b`: TOST against +-margin (points; `DEFAULT_MARGIN` 2 unless the claim or the file sets one): `equivalent`
  when the 90% interval lies inside +-margin, i.e. both one-sided tests reject at alpha.

Multiplicity: every defined pair of every claim of the file forms one family; Holm's step-down adjusts their
p-values and a pair is called only if its adjusted p <= alpha (0.05), so the chance of any false call in the
file is at most 5%. Undefined pairs (no values, one seed everywhere) are not in the family.

A claim's verdict combines its pairs:

| verdict | when |
|---|---|
| `reversed` | some directional pair is reversed (after Holm) |
| `supported` | every directional pair is supported and every tie pair equivalent (at least one directional pair) |
| `equivalent` | the claim has only ties and every one is shown equivalent |
| `not resolved` | otherwise: some pair not shown, or undefined (note says which and why) |
| `not tested` | the experiment cannot test the claim (the caller's reason) |

`exploratory`: some point of the claim has fewer than `MIN_SEEDS` (3) seeds. At 2 seeds each point's own
variance has 1 df, so little can check the common-sd assumption the calibration rests on (the noisy-point F
test flags a point with 3 times the others' sd about 1 time in 4 at 2 seeds, 3 in 4 at 5), one diverged seed
moves a mean by half its size, and at the measured CPU noise
(1.3 points) the smallest effect found with 80% power after Holm over 8 pairs is about 6 points
(`analysis.power`). `early`: some pair was compared before the experiment's last epoch; early verdicts are
kept out of `headline_counts`.

Measured calibration (`python tests/test_calibration.py`; synthetic experiments, 2,000 per cell (1,000 for the
last row), seed sd 1.3 points, the design of analysis/claims/ablation.yaml: 9 one-at-a-time points, 6 claims,
8 pairs, 6 of them on the shared base point). False calls and coverage are per pair before correction; "in the
file" is any of the 6 claims called anything; effect rows plant 4 points on every pair; tie rows are one
`base ~ x` claim with margin 2 on the same 9-point design:

| seeds per point | 2 | 3 | 5 | 10 |
|---|---|---|---|---|
| false calls per pair, no effect (nominal 5%) | 5.1% | 5.0% | 4.7% | 4.8% |
| 95% interval coverage | 95.1% | 94.8% | 94.8% | 94.9% |
| any false call in the file, Holm (<= 5%) | 2.2% | 3.0% | 2.9% | 2.9% |
| any false call in the file, no correction | 23.7% | 26.7% | 25.0% | 27.3% |
| pair supported, effect 3 sd (4 points), Holm | 49.8% | 87.7% | 99.5% | 100.0% |
| claim supported, effect 3 sd, Holm | 44.0% | 84.6% | 99.4% | 100.0% |
| tie shown equivalent, true difference = margin (<= 5%) | 1.8% | 3.2% | 5.9% | 5.2% |
| tie shown equivalent, no true difference | 5.4% | 17.3% | 53.8% | 92.0% |
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from numpy.typing import ArrayLike

from .inference import (ALPHA, DEFAULT_MARGIN, RELATIONS, PairTest, check_alpha, check_margin, compare_pair, holm,
                        pool_sd)

__all__ = ["SUPPORTED", "REVERSED", "EQUIVALENT", "NOT_RESOLVED", "NOT_TESTED", "VERDICTS", "MIN_SEEDS", "CORRECTION",
           "ROW_COLUMNS", "ClaimOrder", "PairVerdict", "ClaimVerdict", "Judgement", "judge", "judge_design",
           "headline_counts", "claim_rows", "split_chain"]

SUPPORTED = "supported"        # every claimed order shown (and every claimed tie)
REVERSED = "reversed"          # some pair shown the other way round
EQUIVALENT = "equivalent"      # a claim of ties only, every tie shown within its margin
NOT_RESOLVED = "not resolved"  # the data cannot tell at this noise and seed count
NOT_TESTED = "not tested"      # the experiment does not vary what the claim is about
VERDICTS = (SUPPORTED, REVERSED, EQUIVALENT, NOT_RESOLVED, NOT_TESTED)
MIN_SEEDS = 3  # fewer seeds on a point of the claim: exploratory (see the module docstring)
CORRECTION = "holm"

_SPLIT = re.compile(r"\s+([<>~])\s+")  # relations stand between spaces: level names may hold '<', '=' or ','


def split_chain(text: str) -> list[str]:
    """`"a > b ~ c"` as `["a", ">", "b", "~", "c"]`: levels at even places, relations between them."""
    return _SPLIT.split(text.strip())


@dataclass(frozen=True)
class ClaimOrder:
    """A claim as a chain: `levels[i] relations[i] levels[i + 1]`, each relation `>`, `<` or `~` on the
    metric's values (for a loss, "a is better" is `a < b`). `margin` (points) overrides the file's margin for
    this claim's ties. `name` identifies the claim in rows (e.g. `dropout` or the claim's id)."""

    name: str
    levels: tuple[str, ...]
    relations: tuple[str, ...]
    margin: float | None = None

    def __post_init__(self):
        if len(self.levels) < 2:
            raise ValueError(f"{self.name}: a claim needs two or more levels, got {len(self.levels)}")
        if len(self.relations) != len(self.levels) - 1:
            raise ValueError(f"{self.name}: {len(self.levels)} levels need {len(self.levels) - 1} relations, "
                             f"got {len(self.relations)}")
        bad = [r for r in self.relations if r not in RELATIONS]
        if bad:
            raise ValueError(f"{self.name}: relation must be one of {', '.join(RELATIONS)}, got {bad[0]!r}")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"{self.name}: a level appears twice")
        if self.margin is not None:
            check_margin(self.margin)

    @classmethod
    def parse(cls, text: str, *, name: str | None = None, margin: float | None = None) -> ClaimOrder:
        """`"a > b ~ c"` (relations between spaces) as a ClaimOrder; `name` defaults to the text."""
        parts = split_chain(text)
        return cls(name if name is not None else text.strip(), tuple(parts[0::2]), tuple(parts[1::2]), margin)

    @property
    def pairs(self) -> tuple[tuple[str, str, str], ...]:
        """The adjacent pairs as (a, relation, b)."""
        return tuple(zip(self.levels, self.relations, self.levels[1:]))

    @property
    def text(self) -> str:
        return " ".join(x for pair in zip(self.levels, (*self.relations, "")) for x in pair).strip()


@dataclass(frozen=True)
class PairVerdict:
    """One pair's test, its Holm-adjusted p (NaN when the test is undefined) and what it shows."""

    test: PairTest
    p_adjusted: float
    verdict: str  # SUPPORTED, REVERSED, EQUIVALENT or NOT_RESOLVED


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim's verdict from its pairs (rules in the module docstring). `reason`: why a claim is not tested."""

    claim: ClaimOrder
    verdict: str
    pairs: tuple[PairVerdict, ...] = ()
    reason: str = ""
    exploratory: bool = False  # some point of the claim has fewer than MIN_SEEDS seeds
    early: bool = False        # some pair compared before the last epoch: not a headline verdict

    @property
    def epochs(self) -> tuple[int, ...]:
        return tuple(sorted({p.test.epoch for p in self.pairs if p.test.epoch is not None}))

    @property
    def note(self) -> str:
        """Why the verdict is what it is when it is not a plain yes: the reversed pairs, or the pairs not
        shown; plus the data warnings of the pairs (a noisy point)."""
        if self.verdict == NOT_TESTED:
            return self.reason
        if self.verdict == REVERSED:
            parts = [f"{p.test.text} reversed (diff {p.test.diff:+.2f} [{p.test.low:+.2f}, {p.test.high:+.2f}])"
                     for p in self.pairs if p.verdict == REVERSED]
        else:
            parts = [_why(p) for p in self.pairs if p.verdict == NOT_RESOLVED]
        parts += [p.test.note for p in self.pairs if p.test.defined and p.test.note]
        return "; ".join(parts)


@dataclass(frozen=True)
class Judgement:
    """The verdicts of a claims file: `family` tests (the defined pairs of all its claims) corrected
    together by `correction` at family-wise `alpha`."""

    claims: tuple[ClaimVerdict, ...]
    alpha: float
    family: int
    correction: str = CORRECTION

    @property
    def text(self) -> str:
        """How the file was judged, for the report."""
        return (f"Holm's step-down correction over {self.family} test{'s' * (self.family != 1)} "
                f"(family-wise alpha {self.alpha:g})")

    def __iter__(self):
        return iter(self.claims)


def _pair_verdict(test: PairTest, p_adjusted: float, alpha: float) -> str:
    if not math.isfinite(p_adjusted) or p_adjusted > alpha:
        return NOT_RESOLVED
    if test.relation == "~":
        return EQUIVALENT
    claimed = 1 if test.relation == ">" else -1
    return SUPPORTED if claimed * test.diff > 0 else REVERSED


def _why(pv: PairVerdict) -> str:
    t = pv.test
    if not t.defined:
        return f"{t.text}: {t.note}"
    if t.relation == "~":
        return (f"{t.text}: {t.confidence:.0%} interval [{t.low:+.2f}, {t.high:+.2f}] not shown inside "
                f"+-{t.margin:g} (adjusted p {pv.p_adjusted:.2g})")
    return f"{t.text}: not shown (diff {t.diff:+.2f} [{t.low:+.2f}, {t.high:+.2f}], adjusted p {pv.p_adjusted:.2g})"


def _combine(claim: ClaimOrder, pairs: tuple[PairVerdict, ...], min_seeds: int) -> ClaimVerdict:
    verdicts = {p.verdict for p in pairs}
    if REVERSED in verdicts:
        verdict = REVERSED
    elif verdicts <= {SUPPORTED, EQUIVALENT}:
        verdict = EQUIVALENT if all(r == "~" for r in claim.relations) else SUPPORTED
    else:
        verdict = NOT_RESOLVED
    return ClaimVerdict(claim, verdict, pairs, exploratory=any(p.test.seeds < min_seeds for p in pairs),
                        early=any(not p.test.final for p in pairs))


def judge(items: Sequence[tuple[ClaimOrder, Sequence[PairTest] | str]], *, alpha: float = ALPHA,
          min_seeds: int = MIN_SEEDS) -> Judgement:
    """Verdicts for a claims file. `items`: per claim, in the file's order, either its pair tests (one
    `compare_pair` per adjacent pair, in order, each on the design's values at that pair's epoch) or a
    string: why the experiment cannot test it (`not tested`). Holm runs over all defined pairs of all
    claims. Raises ValueError when the tests do not match the claim's pairs."""
    alpha = check_alpha(alpha)
    tests: list[PairTest] = []
    for claim, pairs in items:
        if isinstance(pairs, str):
            continue
        got = [t.relation for t in pairs]
        if got != list(claim.relations):
            raise ValueError(f"{claim.name}: the tests' relations {' '.join(got) or '(none)'} do not match the "
                             f"claim's pairs {' '.join(claim.relations)}")
        tests.extend(pairs)
    adjusted = iter(holm([t.p for t in tests]))
    family = sum(t.defined for t in tests)
    verdicts = []
    for claim, pairs in items:
        if isinstance(pairs, str):
            verdicts.append(ClaimVerdict(claim, NOT_TESTED, (), reason=pairs))
            continue
        judged = []
        for t in pairs:
            p_adjusted = float(next(adjusted))
            judged.append(PairVerdict(t, p_adjusted, _pair_verdict(t, p_adjusted, alpha)))
        verdicts.append(_combine(claim, tuple(judged), min_seeds))
    return Judgement(tuple(verdicts), alpha, family)


def judge_design(values: Mapping[str, ArrayLike], claims: Sequence[ClaimOrder], *, epoch: int | None = None,
                 final: bool = True, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA,
                 min_seeds: int = MIN_SEEDS) -> Judgement:
    """`judge` for the common case where every pair is compared at one epoch (FIFO: the last one):
    `values` maps each design point (named as the claims name their levels) to its per-seed values there.
    `margin` is the file's equivalence margin in points; a claim's own `margin` wins."""
    pooled = pool_sd(values)
    items = [(claim, [compare_pair(values, a, r, b, pooled=pooled, alpha=alpha, epoch=epoch, final=final,
                                   margin=claim.margin if claim.margin is not None else margin)
                      for a, r, b in claim.pairs]) for claim in claims]
    return judge(items, alpha=alpha, min_seeds=min_seeds)


def headline_counts(verdicts: Judgement | Sequence[ClaimVerdict]) -> dict[str, int]:
    """How many claims got each verdict, leaving out early ones (compared before the last epoch, where an
    order can still reverse); every verdict word is a key."""
    counts = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        if not v.early:
            counts[v.verdict] += 1
    return counts


ROW_COLUMNS = ("claim", "pair", "epoch", "final", "n_a", "n_b", "mean_a", "mean_b", "diff", "low", "high", "confidence",
               "margin", "sd", "df", "p_claimed", "p", "p_adjusted", "correction", "family", "verdict", "claim_verdict",
               "exploratory", "note")


def claim_rows(judgement: Judgement) -> list[dict]:
    """One row per pair (one per untested claim), keys `ROW_COLUMNS`, for `claims.csv`: numbers in points,
    p-values raw and Holm-adjusted, the pair's verdict and its claim's."""
    rows = []
    for v in judgement.claims:
        common = dict(claim=v.claim.name, correction=judgement.correction, family=judgement.family,
                      claim_verdict=v.verdict, exploratory=v.exploratory)
        if not v.pairs:
            rows.append({**dict.fromkeys(ROW_COLUMNS), **common, "pair": v.claim.text, "verdict": v.verdict,
                         "note": v.note})
        for pv in v.pairs:
            t = pv.test
            rows.append({**common, "pair": t.text, "epoch": t.epoch, "final": t.final, "n_a": t.n_a, "n_b": t.n_b,
                         "mean_a": t.mean_a, "mean_b": t.mean_b, "diff": t.diff, "low": t.low, "high": t.high,
                         "confidence": t.confidence, "margin": t.margin, "sd": t.sd, "df": t.df,
                         "p_claimed": t.p_claimed, "p": t.p, "p_adjusted": pv.p_adjusted, "verdict": pv.verdict,
                         "note": t.note})
    return [{k: row.get(k) for k in ROW_COLUMNS} for row in rows]
