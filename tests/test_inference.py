"""analysis.inference, analysis.verdicts, analysis.power and analysis.noise_floor on hand-made numbers.

Expected values come from textbook formulas computed here or from scipy.stats, never from the modules under
test; their calibration over thousands of synthetic experiments is tests/test_calibration.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.inference import DEFAULT_MARGIN, compare_pair, holm, pool_sd
from analysis.noise_floor import importance_floor
from analysis.power import detectable_effect, pair_power, seeds_needed
from analysis.verdicts import (EQUIVALENT, MIN_SEEDS, NOT_RESOLVED, NOT_TESTED, REVERSED, ROW_COLUMNS, SUPPORTED,
                               VERDICTS, ClaimOrder, claim_rows, headline_counts, judge, judge_design)


# ------------------------------------------------------------------------------------------ pooling
def test_pooled_sd_sums_squares_over_points():
    """SS 2 (df 1) + SS 8 (df 2); a one-seed point adds nothing; NaN (a crashed run) is dropped."""
    pooled = pool_sd({"a": [1.0, 3.0], "b": [2.0, 4.0, 6.0], "c": [5.0], "d": [7.0, math.nan]})
    assert pooled.df == 3 and pooled.points == 4
    assert pooled.sd == pytest.approx(math.sqrt(10 / 3))


def test_one_seed_everywhere_is_undefined_and_not_resolved():
    values = {"a": [60.0], "b": [50.0], "c": [55.0]}
    assert not pool_sd(values).defined
    t = compare_pair(values, "a", ">", "b")
    assert t.diff == 10 and not t.defined and math.isnan(t.low) and "df 0" in t.note
    verdict, = judge_design(values, [ClaimOrder.parse("a > b")]).claims
    assert verdict.verdict == NOT_RESOLVED and "no estimate of seed noise" in verdict.note


def test_two_points_reduce_to_students_t_test():
    a, b = [56.9, 55.7, 57.4], [55.1, 54.0]
    t = compare_pair({"a": a, "b": b}, "a", ">", "b")
    ref = stats.ttest_ind(a, b, equal_var=True)
    assert t.p == pytest.approx(ref.pvalue)
    assert t.p_claimed == pytest.approx(stats.ttest_ind(a, b, alternative="greater").pvalue)
    df = len(a) + len(b) - 2
    sd = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / df)
    half = stats.t.ppf(0.975, df) * sd * math.sqrt(1 / len(a) + 1 / len(b))
    assert (t.low, t.high) == pytest.approx((np.mean(a) - np.mean(b) - half, np.mean(a) - np.mean(b) + half))
    assert t.df == df and t.confidence == 0.95


def test_other_points_add_degrees_of_freedom_not_bias():
    """Pooling over the design: the pair's se uses every point's spread; the difference is the pair's own."""
    rng = np.random.default_rng(1)
    values = {f"p{i}": rng.normal(50 + i, 1.3, 2) for i in range(9)}
    t = compare_pair(values, "p0", "<", "p3")
    sd = math.sqrt(np.mean([np.var(v, ddof=1) for v in values.values()]))  # equal seeds: mean of variances
    assert t.df == 9 and t.sd == pytest.approx(sd)
    assert t.se == pytest.approx(sd * math.sqrt(1 / 2 + 1 / 2))
    assert t.diff == pytest.approx(values["p0"].mean() - values["p3"].mean())
    assert t.p_claimed == pytest.approx(stats.t.cdf(t.diff / t.se, 9))


def test_claimed_direction_mirrors():
    rng = np.random.default_rng(2)
    values = {k: rng.normal(50, 1, 3) for k in "abcd"}
    values["a"] += 2
    up, down = compare_pair(values, "a", ">", "b"), compare_pair(values, "b", "<", "a")
    assert up.p_claimed == pytest.approx(down.p_claimed) and up.p == pytest.approx(down.p)
    assert up.diff == pytest.approx(-down.diff) and (up.low, up.high) == pytest.approx((-down.high, -down.low))
    other_way = compare_pair(values, "a", "<", "b")
    assert other_way.p_claimed == pytest.approx(1 - up.p_claimed) and other_way.p == up.p


def test_tost_is_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    agree = []
    for _ in range(200):
        values = {k: rng.normal(rng.uniform(-2, 2), 1, 4) for k in "abc"}
        t = compare_pair(values, "a", "~", "b", margin=1.5)
        inside = -1.5 < t.low and t.high < 1.5
        agree.append((t.p <= 0.05) == inside)
        assert t.confidence == pytest.approx(0.90) and t.margin == 1.5 and t.p_claimed == t.p
    assert all(agree)


def test_marginal_mean_over_cells():
    """A level made of two cells (a grid's other factor): mean of cell means, se from each cell's seeds."""
    values = {"x1": [50.0, 52.0], "x2": [60.0, 61.0, 62.0], "y1": [48.0, 49.0], "y2": [57.0, 59.0]}
    t = compare_pair(values, ("x1", "x2"), ">", ("y1", "y2"))
    assert t.mean_a == pytest.approx((51 + 61) / 2) and t.mean_b == pytest.approx((48.5 + 58) / 2)
    sd = math.sqrt((2 + 2 + 0.5 + 2) / (1 + 2 + 1 + 1))  # SS over df per cell
    assert t.sd == pytest.approx(sd) and t.df == 5
    assert t.se == pytest.approx(sd * math.sqrt((1 / 2 + 1 / 3) / 4 + (1 / 2 + 1 / 2) / 4))
    assert t.n_a == 5 and t.n_b == 4 and t.seeds == 2 and t.text == "(x1 + x2) > (y1 + y2)"


def test_diverged_seed_is_flagged_in_the_note():
    rng = np.random.default_rng(4)
    values = {f"p{i}": 50 + rng.normal(0, 1, 3) for i in range(8)}
    values["p7"][0] = 10.0  # diverged
    pooled = pool_sd(values)
    assert pooled.noisy == ("p7",)
    assert "seed spread at p7" in compare_pair(values, "p0", ">", "p7").note
    assert compare_pair(values, "p0", ">", "p1").note == ""
    assert pool_sd({f"p{i}": 50 + rng.normal(0, 1, 3) for i in range(8)}).noisy == ()


def test_level_without_values_is_not_resolved():
    values = {"a": [1.0, 2.0], "b": [math.nan, math.nan], "c": [3.0, 4.0]}
    t = compare_pair(values, "a", ">", "b")
    assert not t.defined and t.note == "no values at b" and t.n_b == 0 and math.isnan(t.mean_b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin=0), "margin must be a positive"),
    (dict(margin=-1.0), "margin must be a positive"),
    (dict(alpha=0), "alpha must be in (0, 1)"),
    (dict(alpha=1.5), "alpha must be in (0, 1)"),
    (dict(relation="="), "relation must be one of"),
    (dict(b="z"), "no design point 'z'"),
    (dict(b=()), "at least one design point"),
])
def test_bad_input_is_one_line(kwargs, message):
    call = {"a": "a", "relation": ">", "b": "b"} | kwargs
    with pytest.raises(ValueError) as exc:
        compare_pair({"a": [1.0, 2.0], "b": [2.0, 3.0]}, call.pop("a"), call.pop("relation"), call.pop("b"), **call)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bad_values_are_one_line():
    with pytest.raises(ValueError, match="1-D array"):
        pool_sd({"a": [[1.0, 2.0]]})
    with pytest.raises(ValueError, match="must map design points"):
        pool_sd([1.0, 2.0])


# ------------------------------------------------------------------------------------------------ Holm
def test_holm_by_hand():
    # sorted: .005 x4 = .02; .01 x3 = .03; .03 x2 = .06; .04 x1 = .04 -> .06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, math.nan, 0.01])
    assert math.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.2, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="p-values"):
        holm([0.5, 1.2])


# -------------------------------------------------------------------------------------------- claims
def test_claim_order_parse():
    claim = ClaimOrder.parse("lr=0.01,optimizer=sgd ~ lr=0.001,optimizer=adam > [2,2,2,2]", margin=1.0)
    assert claim.levels == ("lr=0.01,optimizer=sgd", "lr=0.001,optimizer=adam", "[2,2,2,2]")
    assert claim.relations == ("~", ">") and claim.margin == 1.0
    assert claim.pairs[1] == ("lr=0.001,optimizer=adam", ">", "[2,2,2,2]")
    assert ClaimOrder.parse(claim.text) == ClaimOrder(claim.text, claim.levels, claim.relations)


@pytest.mark.parametrize("text, message", [
    ("a", "two or more levels"),
    ("a > b > a", "appears twice"),
])
def test_claim_order_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ClaimOrder.parse(text)


def test_claim_order_checks_relations_and_margin():
    with pytest.raises(ValueError, match="relation must be one of"):
        ClaimOrder("c", ("a", "b"), ("=",))
    with pytest.raises(ValueError, match="need 1 relations"):
        ClaimOrder("c", ("a", "b"), (">", ">"))
    with pytest.raises(ValueError, match="margin must be a positive"):
        ClaimOrder.parse("a ~ b", margin=0)


def design(**shifts: float) -> dict[str, np.ndarray]:
    """10 points x 4 seeds with small, fixed noise (sd ~0.3): differences of 3 points are clear."""
    rng = np.random.default_rng(5)
    values = {k: 50 + rng.normal(0, 0.3, 4) for k in "abcdefghij"}
    for k, shift in shifts.items():
        values[k] = values[k] + shift
    return values


def test_verdict_combination():
    values = design(a=6.0, b=3.0, e=-3.0)  # a > b > c, c ~ d, e well below f
    judged = judge_design(values, [
        ClaimOrder.parse("a > b > c"),  # supported
        ClaimOrder.parse("e > f"),      # reversed
        ClaimOrder.parse("c ~ d"),      # equivalent
        ClaimOrder.parse("b > c ~ d"),  # supported (mixed)
        ClaimOrder.parse("a > b ~ c"),  # b ~ c is 3 points apart: not resolved
        ClaimOrder.parse("a < b > c"),  # one pair reversed is enough
    ])
    assert [c.verdict for c in judged] == [SUPPORTED, REVERSED, EQUIVALENT, SUPPORTED, NOT_RESOLVED, REVERSED]
    assert judged.claims[1].note.startswith("e > f reversed (diff -3.")
    assert judged.claims[4].note.startswith("b ~ c: 90% interval [+2.") and "+-2" in judged.claims[4].note
    assert [p.verdict for p in judged.claims[4].pairs] == [SUPPORTED, NOT_RESOLVED]
    assert judged.family == 10 and not any(c.exploratory for c in judged)


def test_holm_runs_across_the_whole_file():
    """A pair at raw p ~ 0.02 is supported alone and not resolved among seven pairs with no effect."""
    values = {k: np.array([0.0, 1.0, 2.0]) + (i % 2) * 0.01 for i, k in enumerate("abcdefgh")}
    values["a"] = values["a"] + 1.0
    values["b"] = values["b"] - 1.0
    pair = ClaimOrder.parse("a > b")
    alone = judge_design(values, [pair])
    assert alone.family == 1 and 0.01 < alone.claims[0].pairs[0].test.p < 0.05
    assert alone.claims[0].verdict == SUPPORTED
    crowded = judge_design(values, [pair, *(ClaimOrder.parse(f"{x} > {y}") for x, y in ("cd", "ef", "gh", "ce"))])
    assert crowded.family == 5 and crowded.claims[0].verdict == NOT_RESOLVED
    first = crowded.claims[0].pairs[0]
    assert first.p_adjusted == pytest.approx(5 * first.test.p) and "adjusted p" in crowded.claims[0].note


def test_untested_claims_and_mismatched_tests():
    values = design(a=3.0)
    tested = ClaimOrder.parse("a > b")
    pair = compare_pair(values, "a", ">", "b")
    judged = judge([(tested, [pair]), (ClaimOrder.parse("x > y"), "the experiment does not vary x")])
    assert judged.family == 1 and [c.verdict for c in judged] == [SUPPORTED, NOT_TESTED]
    assert judged.claims[1].note == "the experiment does not vary x"
    with pytest.raises(ValueError, match="do not match"):
        judge([(ClaimOrder.parse("a > b > c"), [pair])])


def test_exploratory_early_and_headline_counts():
    values = design(a=3.0)
    values["b"] = values["b"][:2]
    claims = [ClaimOrder.parse("a > b"), ClaimOrder.parse("a > c")]
    pooled = pool_sd(values)
    judged = judge([(claims[0], [compare_pair(values, "a", ">", "b", pooled=pooled, epoch=8, final=True)]),
                    (claims[1], [compare_pair(values, "a", ">", "c", pooled=pooled, epoch=2, final=False)])])
    assert [c.verdict for c in judged] == [SUPPORTED, SUPPORTED]
    assert [c.exploratory for c in judged] == [True, False] and MIN_SEEDS == 3
    assert [c.early for c in judged] == [False, True] and judged.claims[1].epochs == (2,)
    counts = headline_counts(judged)
    assert counts == {SUPPORTED: 1, REVERSED: 0, EQUIVALENT: 0, NOT_RESOLVED: 0, NOT_TESTED: 0}
    assert tuple(counts) == VERDICTS


def test_rows_for_claims_csv():
    values = design(a=3.0)
    judged = judge([(ClaimOrder.parse("a > b > c", name="lr"), [compare_pair(values, "a", ">", "b", epoch=8),
                                                                  compare_pair(values, "b", ">", "c", epoch=8)]),
                    (ClaimOrder.parse("x ~ y", name="depth"), "not varied")])
    rows = claim_rows(judged)
    assert [tuple(r) for r in rows] == [ROW_COLUMNS] * 3
    assert [(r["claim"], r["pair"], r["verdict"], r["claim_verdict"]) for r in rows] == [
        ("lr", "a > b", SUPPORTED, NOT_RESOLVED), ("lr", "b > c", NOT_RESOLVED, NOT_RESOLVED),
        ("depth", "x ~ y", NOT_TESTED, NOT_TESTED)]
    first = rows[0]
    assert first["epoch"] == 8 and first["n_a"] == first["n_b"] == 4 and first["low"] < first["diff"] < first["high"]
    assert first["p_adjusted"] == pytest.approx(2 * first["p"])
    assert first["family"] == 2 and first["correction"] == "holm"
    assert rows[2]["diff"] is None and rows[2]["note"] == "not varied"
    assert DEFAULT_MARGIN == 2.0


# ---------------------------------------------------------------------------------------------- power
def test_detectable_effect_is_where_power_reaches_80_percent():
    effect = detectable_effect(1.3, points=9, seeds=2, family=8)
    assert pair_power(effect, 1.3, points=9, seeds=2, family=8) == pytest.approx(0.8, abs=1e-6)
    # Many seeds: the t test becomes a z test, MDE = (z_{1 - alpha/2f} + z_{power}) se.
    se = 1.3 * math.sqrt(2 / 200)
    normal = (stats.norm.ppf(1 - 0.05 / 16) + stats.norm.ppf(0.8)) * se
    assert detectable_effect(1.3, points=9, seeds=200, family=8) == pytest.approx(normal, rel=0.01)


def test_more_seeds_on_the_base_and_fewer_tests_detect_less():
    plain = detectable_effect(1.3, points=9, seeds=3, family=8)
    assert detectable_effect(1.3, points=9, seeds=3, base_seeds=6, family=8) < plain
    assert detectable_effect(1.3, points=9, seeds=3, family=1) < plain
    assert detectable_effect(2.6, points=9, seeds=3, family=8) == pytest.approx(2 * plain)


def test_seeds_needed_is_the_smallest_that_suffices():
    n = seeds_needed(2.0, 1.3, points=9, family=8)
    assert detectable_effect(1.3, points=9, seeds=n, family=8) <= 2.0
    assert detectable_effect(1.3, points=9, seeds=n - 1, family=8) > 2.0
    assert seeds_needed(2.0, 1.3, points=9, family=8, base_extra=6) <= n
    with pytest.raises(ValueError, match="do not find"):
        seeds_needed(0.01, 1.3, points=9, max_seeds=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sd=0), "sd must be a positive"),
    (dict(seeds=1), "df 0"),
    (dict(points=1), "need points >= 2"),
    (dict(power=1.0), "power must be in"),
    (dict(alpha=0.0), "alpha must be in"),
])
def test_power_bad_input(kwargs, message):
    args = dict(sd=1.3, points=9, seeds=2) | kwargs
    with pytest.raises(ValueError, match=message):
        detectable_effect(args.pop("sd"), **args)


# ---------------------------------------------------------------------------------------- noise floor
def fanova(configs, values):
    """Optuna's fANOVA importances of categorical factors (16 trees: fast, enough for a clear effect)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = sorted(configs[0])
    distributions = {n: optuna.distributions.CategoricalDistribution(sorted({c[n] for c in configs})) for n in names}
    study = optuna.create_study()
    study.add_trials([optuna.trial.create_trial(params=dict(c), distributions=distributions, value=float(v))
                      for c, v in zip(configs, values)])
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)
    return optuna.importance.get_param_importances(study, evaluator=evaluator)


def test_fanova_noise_floor_finds_the_planted_factor_only():
    """36 trials, 3 factors; `optimizer` moves the metric by 5 sd. With the metric pure noise, fANOVA still
    hands out importances summing to 1, but none clears its floor."""
    rng = np.random.default_rng(6)
    configs = [{"optimizer": ["adam", "sgd"][i % 2], "model": ["a", "b", "c"][(i // 2) % 3],
                "bn": ["y", "n"][(i // 6) % 2]} for i in range(36)]
    noise = rng.normal(0, 1, 36)
    planted = noise + np.array([5.0 * (c["optimizer"] == "adam") for c in configs])
    found = {f.factor: f for f in importance_floor(fanova, configs, planted, permutations=19)}
    assert found["optimizer"].above and found["optimizer"].p == pytest.approx(0.05)
    assert not found["model"].above and not found["bn"].above
    null = importance_floor(fanova, configs, noise, permutations=19)
    assert sum(f.importance for f in null) == pytest.approx(1.0) and not any(f.above for f in null)


def test_noise_floor_bad_input():
    with pytest.raises(ValueError, match="one number per config"):
        importance_floor(lambda c, v: {}, [{"a": 1}] * 3, [1.0, 2.0])
    with pytest.raises(ValueError, match="use at least 19"):
        importance_floor(lambda c, v: {}, [{"a": 1}] * 3, [1.0, 2.0, 3.0], permutations=10)
