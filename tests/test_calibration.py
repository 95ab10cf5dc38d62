"""Calibration of the verdicts (analysis.verdicts, analysis.inference): synthetic experiments with planted truth.

Every experiment is drawn from the model the tests assume: per-seed values normal around each design
point's true mean with one seed sd. The design is the shipped ablation claims file (9 one-at-a-time
points, the base point shared by 6 of the 8 pairs) unless a test says otherwise. Replicates are drawn
as one numpy array per test (fixed RNG seeds: every run sees the same data) and judged through the public API.

Bounds: a rate estimated from N replicates lies within 3 binomial sd of its true value 99.7% of the time;
`tol(p, N)` = 3 sqrt(p (1 - p) / N) is 1.5 points for a 5% rate at N = 2,000. Rates averaged over the
8 correlated pairs of a file use the single-pair tolerance (the average varies no more than one pair).

`python tests/test_calibration.py` prints the table in analysis/verdicts.py.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from analysis.inference import ALPHA, compare_pair, holm, pool_sd
from analysis.noise_floor import importance_floor
from analysis.power import pair_power
from analysis.verdicts import EQUIVALENT, NOT_RESOLVED, REVERSED, SUPPORTED, ClaimOrder, Judgement, judge_design

SEEDS = (2, 3, 5, 10)
N = 2000  # replicates per cell for rates that should sit at 5% or 95%
N_POWER = 1000  # for power and robustness checks, whose bounds are looser
SD = 1.3  # seed sd measured at the CPU budget (results/ablation-cpu-fifo), points

BASE = "base"
POINTS = (BASE, "stem_kernel=7", "lr_decay=1.0", "lr_decay=0.45", "dropout=0.4", "dropout=0.8", "stem_bn=false",
          "blocks_per_stage=[3,3,3,3]", "optimizer=sgd")
# analysis/claims/ablation.yaml as chains over the design's points: 6 claims, 8 pairs, 6 of them on the base.
ABLATION = (
    ClaimOrder.parse("base > stem_kernel=7", name="stem_kernel"),
    ClaimOrder.parse("base > lr_decay=1.0 > lr_decay=0.45", name="lr_decay"),
    ClaimOrder.parse("base > dropout=0.4 > dropout=0.8", name="dropout"),
    ClaimOrder.parse("base > stem_bn=false", name="stem_bn"),
    ClaimOrder.parse("blocks_per_stage=[3,3,3,3] > base", name="blocks_per_stage"),
    ClaimOrder.parse("base > optimizer=sgd", name="optimizer"),
)
PAIRS = tuple(pair for claim in ABLATION for pair in claim.pairs)


def tol(p: float, n: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / n)


def experiments(means: Mapping[str, float], seeds: int, reps: int, seed: int, sd: float = SD
                ) -> list[dict[str, np.ndarray]]:
    """`reps` experiments: point -> `seeds` values drawn around the point's true mean."""
    names = list(means)
    draws = np.random.default_rng(seed).normal(size=(reps, len(names), seeds)) * sd
    draws += np.array([means[n] for n in names])[None, :, None]
    return [dict(zip(names, rep)) for rep in draws]


def chain_means(claims: Sequence[ClaimOrder], step: float, base: float = 50.0) -> dict[str, float]:
    """True means where every pair of `claims` holds by `step` points in the claimed direction."""
    means = dict.fromkeys(POINTS, math.nan)
    means[BASE] = base
    for claim in claims:
        if claim.levels[0] != BASE:  # "x > base": x is above the base
            means[claim.levels[0]] = base + step
            continue
        for a, relation, b in claim.pairs:
            means[b] = means[a] - step if relation == ">" else means[a] + step
    return means


def pair_verdicts(judgements: Sequence[Judgement]) -> np.ndarray:
    """(reps, pairs) array of pair verdicts."""
    return np.array([[p.verdict for c in j.claims for p in c.pairs] for j in judgements])


def claim_verdicts(judgements: Sequence[Judgement]) -> np.ndarray:
    return np.array([[c.verdict for c in j.claims] for j in judgements])


def raw_p(judgements: Sequence[Judgement]) -> np.ndarray:
    return np.array([[p.test.p for c in j.claims for p in c.pairs] for j in judgements])


def ablation(seeds: int, step: float, seed: int, reps: int = N, sd: float = SD) -> list[Judgement]:
    means = chain_means(ABLATION, step)
    return [judge_design(values, ABLATION) for values in experiments(means, seeds, reps, seed, sd)]


# ------------------------------------------------------------------------------------------- no effect
@pytest.fixture(scope="module", params=SEEDS, ids=[f"{s}seeds" for s in SEEDS])
def null(request):
    return request.param, ablation(request.param, 0.0, seed=100 + request.param)


def test_no_effect_pairs_are_called_five_percent_of_the_time(null):
    """No effect anywhere: a pair is called (supported or reversed, before Holm) 5% of the time."""
    seeds, judged = null
    called = raw_p(judged) <= ALPHA
    assert abs(called[:, 0].mean() - ALPHA) <= tol(ALPHA, N), called[:, 0].mean()  # one pair, independent replicates
    assert abs(called.mean() - ALPHA) <= tol(ALPHA, N), called.mean()  # all 8 pairs


def test_no_effect_file_has_a_false_call_at_most_five_percent_of_the_time(null):
    """Holm over the file: the chance of any claim called anything is <= 5%; uncorrected it would be ~30%."""
    seeds, judged = null
    any_call = (claim_verdicts(judged) != NOT_RESOLVED).any(axis=1)
    assert any_call.mean() <= ALPHA + tol(ALPHA, N), any_call.mean()
    assert (raw_p(judged) <= ALPHA).any(axis=1).mean() > 0.2  # the correction is needed
    assert all(j.family == 8 and j.correction == "holm" for j in judged)


def test_no_effect_three_level_claims_are_rarely_reversed(null):
    seeds, judged = null
    verdicts = claim_verdicts(judged)
    for i, claim in enumerate(ABLATION):
        if len(claim.levels) == 3:
            assert (verdicts[:, i] == REVERSED).mean() <= ALPHA / 2 + tol(ALPHA / 2, N), claim.name


def test_noisy_point_check_rarely_fires_on_homogeneous_noise(null):
    seeds, judged = null
    flagged = [any("seed spread" in p.test.note for c in j.claims for p in c.pairs) for j in judged]
    assert np.mean(flagged) <= ALPHA + tol(ALPHA, N)


# ------------------------------------------------------------------------------------ planted effects
def coverage(seeds: int) -> float:
    """How often a pair's 95% interval covers its true difference, points at unequal true means (drawn once)."""
    truth = dict(zip(POINTS, np.random.default_rng(7).uniform(40, 60, len(POINTS))))
    covered = []
    for values in experiments(truth, seeds, N, seed=200 + seeds):
        pooled = pool_sd(values)
        for a, relation, b in PAIRS:
            t = compare_pair(values, a, relation, b, pooled=pooled)
            covered.append(t.low <= truth[a] - truth[b] <= t.high)
    return float(np.mean(covered))


@pytest.mark.parametrize("seeds", SEEDS)
def test_intervals_cover_the_true_difference(seeds):
    """Each pair's 95% interval covers its true difference 95% of the time, at every seed count."""
    rate = coverage(seeds)
    assert abs(rate - 0.95) <= tol(0.95, N), rate


@pytest.mark.parametrize("seeds", [2, 3])
def test_marginal_mean_intervals_cover_the_true_difference(seeds):
    """A grid (2 models x 4 recipes, unequal true cell means) compares recipes as marginal means over the models'
    cells; one cell lost a seed (a crashed trial, left out). The 95% interval of a recipe pair covers its true
    marginal difference 95% of the time."""
    names = [f"m{m},r{r}" for m in range(2) for r in range(4)]
    truth = dict(zip(names, np.random.default_rng(8).uniform(40, 60, len(names))))
    a, b = ["m0,r0", "m1,r0"], ["m0,r1", "m1,r1"]
    true = np.mean([truth[c] for c in a]) - np.mean([truth[c] for c in b])
    covered = []
    for values in experiments(truth, seeds, N, seed=1200 + seeds):
        values["m1,r0"] = values["m1,r0"][1:]
        t = compare_pair(values, a, ">", b)
        covered.append(t.low <= true <= t.high)
    assert abs(np.mean(covered) - 0.95) <= tol(0.95, N), np.mean(covered)


@pytest.mark.parametrize("seeds", SEEDS)
def test_large_effects_are_supported_at_least_as_often_as_power_predicts(seeds):
    """Every pair true by 4 points (3 sd): each pair supported at least as often as `pair_power` predicts for
    Bonferroni over 8 (Holm is never less powerful), never reversed; at 5 seeds and more, nearly always."""
    judged = ablation(seeds, 4.0, seed=300 + seeds, reps=N_POWER)
    verdicts = pair_verdicts(judged)
    expected = pair_power(4.0, SD, points=len(POINTS), seeds=seeds, family=len(PAIRS))
    supported = (verdicts == SUPPORTED).mean(axis=0)
    assert supported.min() >= expected - tol(expected, N_POWER), (supported, expected)
    assert not (verdicts == REVERSED).any()
    if seeds >= 5:
        assert (claim_verdicts(judged) == SUPPORTED).mean() >= 0.95


def test_power_matches_the_design_helper_for_one_pair():
    """A one-pair file (family 1) at the effect `pair_power` puts at 80%: found 80% of the time."""
    claim = ClaimOrder.parse("base > stem_kernel=7")
    means = dict.fromkeys(POINTS, 50.0)
    means["stem_kernel=7"] = 50.0 - 3.1
    expected = pair_power(3.1, SD, points=len(POINTS), seeds=3)
    judged = [judge_design(v, [claim]) for v in experiments(means, 3, N, seed=400)]
    rate = np.mean([j.claims[0].verdict == SUPPORTED for j in judged])
    assert abs(rate - expected) <= tol(expected, N), (rate, expected)


def test_reversed_effects_are_called_reversed_never_supported():
    """The truth is the claim backwards by 4 points: `reversed`, as often as the power to find it, and
    never `supported`."""
    judged = ablation(3, -4.0, seed=500, reps=N_POWER)
    verdicts = pair_verdicts(judged)
    expected = pair_power(4.0, SD, points=len(POINTS), seeds=3, family=len(PAIRS))
    assert (verdicts == REVERSED).mean(axis=0).min() >= expected - tol(expected, N_POWER)
    assert not (verdicts == SUPPORTED).any()


def test_partial_null_keeps_the_family_wise_rate():
    """Two claims with large effects (stem kernel 8 points, optimizer 25), the other four with none: the big
    ones are supported, and a null claim is called in <= 5% of files."""
    means = dict.fromkeys(POINTS, 50.0)
    means["stem_kernel=7"], means["optimizer=sgd"] = 42.0, 25.0
    verdicts = claim_verdicts([judge_design(v, ABLATION) for v in experiments(means, 2, N, seed=600)])
    assert (verdicts[:, [0, 5]] == SUPPORTED).mean() >= 0.95
    false_call = (verdicts[:, 1:5] != NOT_RESOLVED).any(axis=1).mean()
    assert false_call <= ALPHA + tol(ALPHA, N), false_call


# ----------------------------------------------------------------------------------------------- ties
def tie_rates(diff: float, seeds: int, seed: int, reps: int = N, relation: str = "~") -> dict[str, float]:
    """Verdict rates of one claim `base <relation> x` on the 9-point design, x true at base - diff."""
    claim = ClaimOrder.parse(f"base {relation} stem_kernel=7")
    means = dict.fromkeys(POINTS, 50.0)
    means["stem_kernel=7"] = 50.0 - diff
    verdicts = [judge_design(v, [claim]).claims[0].verdict for v in experiments(means, seeds, reps, seed)]
    return {v: float(np.mean([x == v for x in verdicts])) for v in (SUPPORTED, REVERSED, EQUIVALENT, NOT_RESOLVED)}


@pytest.mark.parametrize("seeds", SEEDS)
def test_equivalence_at_the_margin_is_shown_at_most_five_percent_of_the_time(seeds):
    """The true difference is exactly the margin (2 points): TOST calls it equivalent <= 5% of the time."""
    rates = tie_rates(2.0, seeds, seed=700 + seeds)
    assert rates[EQUIVALENT] <= ALPHA + tol(ALPHA, N), rates
    assert rates[SUPPORTED] == rates[REVERSED] == 0


def test_true_ties_are_equivalent_with_enough_seeds():
    """No difference, 10 seeds (90% interval half-width about 1 point): shown equivalent nearly always;
    with 2 seeds (half-width about 2.4) hardly ever, which is honest, not a failure."""
    assert tie_rates(0.0, 10, seed=810, reps=N_POWER)[EQUIVALENT] >= 0.85
    assert tie_rates(0.0, 2, seed=802, reps=N_POWER)[EQUIVALENT] <= 0.1


def test_small_effects_inside_the_margin():
    """A real 1-point effect (half the margin): as a tie with 10 seeds, mostly equivalent; as an order with
    2 seeds, supported no more often than its (low) power."""
    assert tie_rates(1.0, 10, seed=900, reps=N_POWER)[EQUIVALENT] >= 0.5
    expected = pair_power(1.0, SD, points=len(POINTS), seeds=2)
    rates = tie_rates(1.0, 2, seed=901, relation=">", reps=N_POWER)
    assert rates[SUPPORTED] <= expected + tol(expected, N_POWER) and expected < 0.15, (rates, expected)


def test_mixed_claim_with_a_tie():
    """`a > b ~ c` with a 5-point gap and a true tie, 10 seeds: supported; claimed the other way: reversed."""
    means = dict.fromkeys(POINTS, 50.0)
    means["stem_kernel=7"] = means["lr_decay=1.0"] = 45.0
    claims = [ClaimOrder.parse("base > stem_kernel=7 ~ lr_decay=1.0"),
              ClaimOrder.parse("stem_kernel=7 > base ~ dropout=0.4")]
    verdicts = claim_verdicts([judge_design(v, claims) for v in experiments(means, 10, 500, seed=1000)])
    assert (verdicts[:, 0] == SUPPORTED).mean() >= 0.8
    assert (verdicts[:, 1] == REVERSED).mean() >= 0.99


# ----------------------------------------------------------------------------------------- noise floor
def eta_squared(configs, values) -> dict[str, float]:
    """A cheap importance: each factor's between-level share of the variance, normalized to sum to 1."""
    values = np.asarray(values) - np.mean(values)
    shares = {}
    for factor in configs[0]:
        levels = np.array([c[factor] for c in configs])
        shares[factor] = sum(values[levels == lv].sum() ** 2 / np.count_nonzero(levels == lv) for lv in set(levels))
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in shares.items()}


# The importance tests' design: three factors (3, 2 and 4 levels) on 24 trials; the planted effect is on level 0 of a.
IMPORTANCE_CONFIGS = [{"a": i % 3, "b": (i // 3) % 2, "c": (i // 6) % 4} for i in range(24)]
IMPORTANCE_EFFECT = np.array([1.0 * (c["a"] == 0) for c in IMPORTANCE_CONFIGS])


def test_noise_floor_calibration():
    """Three factors on 24 trials, 300 data sets: with no effect each factor is above its floor <= 5% of the
    time; with a 4-sd effect on a third of the trials (level 0 of `a`), `a` nearly always is. 19 permutations:
    the fewest that reach the 95% floor (observed above all 19)."""
    rng = np.random.default_rng(1100)
    configs, effect = IMPORTANCE_CONFIGS, IMPORTANCE_EFFECT
    null_flags, planted = [], []
    for _ in range(300):
        noise = rng.normal(size=24)
        null_flags.append([f.above for f in sorted(importance_floor(eta_squared, configs, noise, permutations=19,
                                                                   seed=int(rng.integers(1 << 30))),
                                                   key=lambda f: f.factor)])
        floor = importance_floor(eta_squared, configs, noise + 4 * effect, permutations=19,
                                 seed=int(rng.integers(1 << 30)))
        planted.append(next(f.above for f in floor if f.factor == "a"))
    per_factor = np.mean(null_flags, axis=0)
    assert per_factor.max() <= ALPHA + tol(ALPHA, 300), per_factor
    assert np.mean(planted) >= 0.9


def test_noise_floor_holm_over_factors_keeps_the_family_wise_rate():
    """What the report calls `matters`: Holm over the factors' permutation p (59 shuffles, enough for 3 factors).
    With no effect, some factor is called in <= 5% of 300 data sets (4.3% here; reading each factor's floor alone,
    17%); a 4-sd effect on a third of the trials is still found most of the time (86% here, 100% per factor)."""
    rng = np.random.default_rng(1200)
    configs, effect = IMPORTANCE_CONFIGS, IMPORTANCE_EFFECT
    any_null, planted = [], []
    for _ in range(300):
        noise = rng.normal(size=24)
        for shift, out in ((0.0, any_null), (4.0, planted)):
            floor = importance_floor(eta_squared, configs, noise + shift * effect, permutations=59,
                                     seed=int(rng.integers(1 << 30)))
            called = dict(zip([f.factor for f in floor], holm([f.p for f in floor]) <= ALPHA))
            out.append(any(called.values()) if shift == 0 else called["a"])
    assert np.mean(any_null) <= ALPHA + tol(ALPHA, 300), np.mean(any_null)
    assert np.mean(planted) >= 0.8


# ---------------------------------------------------------------------------------------------- table
def table() -> str:
    """The calibration table of analysis/verdicts.py (the same data as the tests above)."""
    rows: dict[str, list[float]] = {}
    for seeds in SEEDS:
        null, planted = ablation(seeds, 0.0, seed=100 + seeds), ablation(seeds, 4.0, seed=300 + seeds)
        for name, rate in [
            ("false calls per pair, no effect (nominal 5%)", (raw_p(null) <= ALPHA).mean()),
            ("95% interval coverage", coverage(seeds)),
            ("any false call in the file, Holm (<= 5%)", (claim_verdicts(null) != NOT_RESOLVED).any(axis=1).mean()),
            ("any false call in the file, no correction", (raw_p(null) <= ALPHA).any(axis=1).mean()),
            ("pair supported, effect 3 sd (4 points), Holm", (pair_verdicts(planted) == SUPPORTED).mean()),
            ("claim supported, effect 3 sd, Holm", (claim_verdicts(planted) == SUPPORTED).mean()),
            ("tie shown equivalent, true difference = margin (<= 5%)", tie_rates(2.0, seeds, 700 + seeds)[EQUIVALENT]),
            ("tie shown equivalent, no true difference", tie_rates(0.0, seeds, 800 + seeds, N_POWER)[EQUIVALENT]),
        ]:
            rows.setdefault(name, []).append(rate)
    lines = ["| seeds per point | " + " | ".join(map(str, SEEDS)) + " |", "|---|" + "---|" * len(SEEDS)]
    lines += [f"| {name} | " + " | ".join(f"{100 * x:.1f}%" for x in xs) + " |" for name, xs in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    start = time.perf_counter()
    print(table())
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
