"""Search spaces, driven by the shipped files: every space x every budget validates, its design points
are what the design says, `trial_config` agrees with `SearchSpace.config`; every bad input path raises
a one-line SpaceError naming the file and the key."""
from __future__ import annotations

import ast
import copy
import dataclasses
import json
import math
import pickle
import re
from pathlib import Path

import pytest
import yaml

from cnnsearch.config import TrainConfig
from search_spaces import (
    BUDGETS,
    DesignPoint,
    Factor,
    SearchSpace,
    SpaceError,
    list_spaces,
    load_space,
    seed_params,
    trial_config,
)

SPACES = list_spaces()
SPACE_BUDGETS = [(name, budget) for name in SPACES for budget in BUDGETS]
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "search_spaces"


@pytest.fixture(scope="module")
def spaces() -> dict[str, SearchSpace]:
    return {name: load_space(name) for name in SPACES}


def _sampled_values(space: SearchSpace, end: int) -> dict:
    """One draw per factor at an end of its range: end 0 = first choice / low, -1 = last / high."""
    drawn = {}
    for f in space.factors:
        kind, values = ("levels", f.levels) if f.levels is not None else f.distribution
        value = values[end]
        drawn[f.name] = value - 1 if (kind == "randint" and end == -1) else value
    return drawn


def _trials(space: SearchSpace, budget: str) -> list[tuple[DesignPoint | None, dict, dict]]:
    """(point, sampled values, config) for every point (grid, one_at_a_time) or two draws (sample)."""
    if space.design == "sample":
        return [(None, s, space.config(budget, None, space.seeds[0], **s))
                for s in (_sampled_values(space, 0), _sampled_values(space, -1))]
    return [(p, {}, space.config(budget, p, space.seeds[0])) for p in space.points()]


# ------------------------------------------------------------------------------- shipped spaces
def test_shipped_spaces():
    assert SPACES == ["ablation", "architectures", "optimizers", "search"]


@pytest.mark.parametrize("package", ["cnnsearch", "search_spaces", "analysis"])
def test_ray_stays_at_the_edge(package):
    """Only tune/ imports Ray, anywhere in a module (a function-level import counts too)."""
    paths = sorted((REPO / package).rglob("*.py"))
    assert paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "ray" or n.startswith("ray.") for n in names), f"{path.relative_to(REPO)} imports Ray"


@pytest.mark.parametrize("name, budget", SPACE_BUDGETS)
def test_every_trial_config_is_a_valid_train_config(spaces, name, budget):
    space = spaces[name]
    for point, sampled, config in _trials(space, budget):
        json.dumps(config)  # JSON-able
        TrainConfig.from_dict(config)
    assert 1 <= space.budgets[budget].settings["grace_period"] <= space.max_epochs(budget)
    assert space.budgets[budget].settings["reduction_factor"] >= 2
    assert space.max_epochs(budget) == space.config(budget).get("epochs", TrainConfig().epochs)


@pytest.mark.parametrize("name, budget", SPACE_BUDGETS)
def test_base_point_is_base_plus_budget(spaces, name, budget):
    space = spaces[name]
    expected = {**space.base, **space.budgets[budget].overrides, "seed": 3}
    assert space.config(budget, seed=3) == json.loads(json.dumps(expected))
    if space.design == "one_at_a_time":
        assert space.points()[0].label == "base"
        assert space.config(budget, space.points()[0], seed=3) == space.config(budget, seed=3)


@pytest.mark.parametrize("name, budget", SPACE_BUDGETS)
def test_trial_config_follows_the_contract(spaces, name, budget):
    """params as tune/ builds them (and as they come back from Ray's params.json) give the same config."""
    space = spaces[name]
    for seed in space.seeds[:2]:
        for point, sampled, _ in _trials(space, budget):
            params = space.config(budget, None, seed)
            if space.design == "one_at_a_time":
                params["design_point"] = point.param()
            elif space.design == "grid":
                params.update(point.values)
            else:
                params.update(sampled)
            expected = space.config(budget, point, seed, **sampled)
            assert trial_config(params) == expected
            assert trial_config(json.loads(json.dumps(params))) == expected
            assert trial_config(copy.deepcopy(params)) == expected


@pytest.mark.parametrize("name", SPACES)
def test_points_follow_the_design(spaces, name):
    space = spaces[name]
    if space.design == "sample":
        with pytest.raises(SpaceError, match=f"{name}.yaml: design sample"):
            space.points()
        assert all(f.distribution is not None or f.levels for f in space.factors)
        return
    points = space.points()
    labels = [p.label for p in points]
    assert len(set(labels)) == len(labels)
    configs = [json.dumps(space.config("full", p), sort_keys=True) for p in points]
    assert len(set(configs)) == len(configs)
    if space.design == "grid":
        assert len(points) == math.prod(len(f.levels) for f in space.factors)
        assert all(p.factor is None and set(p.values) == {f.name for f in space.factors} for p in points)
        return
    assert len(points) == 1 + sum(len(f.levels) - 1 for f in space.factors)
    base = space.config("full")
    factors = {f.name: f for f in space.factors}
    for point in points[1:]:
        changed = {k for k, v in space.config("full", point).items() if base.get(k) != v}
        assert changed and changed <= set(factors[point.factor].keys), point.label


def test_ablation_is_report_e():
    space = load_space("ablation")
    assert space.design == "one_at_a_time" and space.seeds == (0, 1) and (space.metric, space.mode) == ("val_acc", "max")
    levels = {f.name: f.levels for f in space.factors}
    assert levels == {"stem_kernel": (3, 7), "lr_decay": (0.9, 1.0, 0.45), "dropout": (0.0, 0.4, 0.8),
                      "stem_bn": (True, False), "blocks_per_stage": ((2, 2, 2, 2), (3, 3, 3, 3)),
                      "optimizer": ("adam", "sgd")}
    assert len(space.points()) == 1 + 1 + 2 + 2 + 1 + 1 + 1
    full = space.config("full")
    assert (full["model"], full["lr"], full["batch_size"], full["epochs"], full["width"]) == ("resnet18", 0.001, 512, 30, 1.0)
    assert full["train_subset"] is None
    sgd = next(p for p in space.points() if p.label == "optimizer=sgd")
    assert space.config("full", sgd)["lr"] == 0.001  # one factor at a time: SGD at Adam's lr


def test_optimizers_recipes_set_two_keys():
    space = load_space("optimizers")
    assert len(space.points()) == 8
    recipes = {(c["model"], c["optimizer"], c["lr"]) for c in (space.config("full", p) for p in space.points())}
    assert recipes == {(m, o, lr) for m in ("basecnn", "resnet18")
                       for o, lr in (("sgd", 0.001), ("sgd", 0.01), ("adam", 0.001), ("adamax", 0.002))}


def test_spaces_are_frozen_and_picklable(spaces):
    space = spaces["optimizers"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.design = "grid"  # type: ignore[misc]
    with pytest.raises(TypeError):
        space.base["lr"] = 1.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(space)) == space
    assert copy.deepcopy(space.points()) == space.points()


def test_load_by_path_equals_by_name(spaces, tmp_path):
    path = tmp_path / "copy.yaml"
    path.write_text((PACKAGE / "ablation.yaml").read_text())
    space = load_space(str(path))
    assert space.name == "copy" and space.points() == spaces["ablation"].points()
    assert load_space(PACKAGE / "ablation.yaml").path == spaces["ablation"].path


def test_config_rejects_unknown_budget_and_factor(spaces):
    with pytest.raises(SpaceError, match="ablation.yaml: unknown budget 'huge'; budgets are: smoke, cpu, full"):
        spaces["ablation"].config("huge")
    with pytest.raises(SpaceError, match="search.yaml: unknown factor"):
        spaces["search"].config("smoke", lerning_rate=0.1)


@pytest.mark.parametrize("params, message", [
    ({"lr": 0.1, "lerning_rate": 0.1}, "unknown key 'lerning_rate'"),
    ({"lr": 0.1, "design_point": {"label": "x"}}, "design_point must be a mapping with keys label, factor, level"),
    ({"design_point": {"label": "x", "factor": "recipe", "level": 3}}, "is not a TrainConfig key"),
    ([("lr", 0.1)], "trial params must be a mapping"),
])
def test_trial_config_rejects_bad_params(params, message):
    with pytest.raises(SpaceError, match=message):
        trial_config(params)


# ------------------------------------------------------------------------------ user spaces
VALID = {
    "description": "a small test space",
    "base": {"model": "resnet18", "dataset": "cifar10", "lr": 0.001, "stem_kernel": 3, "dropout": 0.0},
    "factors": {"lr": {"levels": [0.001, 0.01]}},
    "design": "one_at_a_time",
    "seeds": [0],
    "budgets": {b: {"epochs": 2, "width": 0.125, "grace_period": 1} for b in BUDGETS},
}
SAMPLE = {**VALID, "design": "sample", "factors": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}}
GRID = {**VALID, "design": "grid"}


def _write(tmp_path: Path, space: dict | str, name: str = "my.yaml") -> Path:
    path = tmp_path / name
    path.write_text(space if isinstance(space, str) else yaml.safe_dump(space, sort_keys=False))
    return path


def _with(space: dict, **changes) -> dict:
    return {**copy.deepcopy(space), **changes}


def test_user_spaces_load(tmp_path):
    space = load_space(str(_write(tmp_path, VALID)))
    assert [p.label for p in space.points()] == ["base", "lr=0.01"]
    assert space.num_samples == 20 and space.source == "" and (space.metric, space.mode) == ("val_acc", "max")
    assert load_space(str(_write(tmp_path, _with(VALID, seeds=3)))).seeds == (0, 1, 2)
    assert load_space(str(_write(tmp_path, _with(VALID, metric="val_loss")))).mode == "min"
    assert load_space(str(_write(tmp_path, SAMPLE))).factors == (Factor("lr", distribution=("loguniform", (1e-4, 1e-2))),)
    # YAML 1.1 reads 1e-3 as a string; spaces read it as a number
    text = (PACKAGE / "ablation.yaml").read_text().replace("lr: 0.001", "lr: 1e-3")
    assert load_space(str(_write(tmp_path, text))).base["lr"] == 0.001


def test_budget_seeds_and_scheduler(tmp_path):
    """A budget may repeat points more often than the space's `seeds`; a space may name the scheduler
    `tune.run` uses by default. The plan, its trials and its record follow both."""
    from search_spaces.plan import Plan

    space = load_space(str(_write(tmp_path, _with(VALID, seeds=2, scheduler="fifo", budgets={
        **VALID["budgets"], "full": {"epochs": 2, "seeds": 3}}))))
    assert (space.seeds_for("cpu"), space.seeds_for("full"), space.scheduler) == ((0, 1), (0, 1, 2), "fifo")
    plan = Plan(space, "full")
    assert plan.scheduler == "fifo" and plan.num_runs == 2 * 3 and plan.record().seeds == (0, 1, 2)
    assert plan.num_trials == 2 and plan.record().num_trials == 2 * 3  # a trial per point; the record counts runs
    assert len(plan.describe()) == 3 + plan.num_trials
    assert Plan(space, "cpu", scheduler="asha").num_runs == 2 * 2
    assert load_space(str(_write(tmp_path, VALID))).scheduler == "asha"  # DEFAULT_SCHEDULER


def test_base_seeds(tmp_path):
    """A one-at-a-time base point may run more seeds than the others (the space's `base_seeds` or a
    budget's): the space lists each seed across all points in turn, then the base's extra seeds; the plan's
    trials (a point with its seeds each), their params, its dry-run lines and its record all count them."""
    from search_spaces.plan import Plan

    space = load_space(str(_write(tmp_path, _with(VALID, seeds=2, base_seeds=[0, 1, 7], budgets={
        **VALID["budgets"], "full": {"epochs": 2, "seeds": 3, "base_seeds": 5}}))))
    assert (space.base_seeds_for("cpu"), space.base_seeds_for("full")) == ((0, 1, 7), (0, 1, 2, 3, 4))
    assert [(p.label, s) for p, s in space.trials("cpu")] == [
        ("base", 0), ("lr=0.01", 0), ("base", 1), ("lr=0.01", 1), ("base", 7)]
    for budget, runs in (("cpu", 5), ("full", 2 * 3 + 2)):
        plan = Plan(space, budget)
        params = [plan.group_params(g) for g in plan.groups()]
        assert plan.num_runs == space.num_trials(budget) == sum(len(p["seeds"]) for p in params) == runs
        configs = {json.dumps(trial_config({**plan.shared_params(), **one}), sort_keys=True)
                   for p in params for one in seed_params(p)}
        expected = {json.dumps(plan.config(point, seed), sort_keys=True) for point, seed in space.trials(budget)}
        assert configs == expected and len(configs) == runs  # every run of the space, none twice
        assert len(plan.describe()) == 3 + plan.num_trials == 3 + 2
        assert plan.record().base_seeds == space.base_seeds_for(budget)
    seeds = [p["seeds"] for p in (Plan(space, "full").group_params(g) for g in Plan(space, "full").groups())
             if p["design_point"]["factor"] is None]
    assert seeds == [[0, 1, 2, 3, 4]]
    plain = Plan(load_space(str(_write(tmp_path, _with(VALID, seeds=2)))), "cpu")
    assert plain.num_runs == 4 and plain.record().base_seeds == ()  # the record says nothing extra
    grid = Plan(load_space(str(_write(tmp_path, _with(GRID, seeds=2, factors={"lr": {"levels": [0.001, 0.01]}})))), "cpu")
    assert [{k: v for k, v in grid.group_params(g).items() if k != "group"} for g in grid.groups()] == [
        {"seeds": [0, 1], "lr": 0.001}, {"seeds": [0, 1], "lr": 0.01}]


def test_spaces_with_claims_run_fifo_and_three_seeds_at_full(spaces):
    """Claims are checked at the last epoch, so the spaces that have claims files run every level to it; at the
    full budget no verdict rests on 2 seeds, and a shared base point runs at least twice a point's seeds.
    The open search keeps ASHA."""
    from analysis.claims import CLAIMS_DIR

    with_claims = {p.stem for p in CLAIMS_DIR.glob("*.yaml")}
    assert with_claims == {"ablation", "architectures", "optimizers"}
    for name, space in spaces.items():
        assert space.scheduler == ("fifo" if name in with_claims else "asha"), name
        if name in with_claims:
            assert len(space.seeds_for("full")) >= 3 and len(space.seeds_for("cpu")) >= 2, name
        if name in with_claims and space.design == "one_at_a_time":  # every pair shares the base point
            for budget in ("cpu", "full"):
                assert len(space.base_seeds_for(budget)) >= 2 * len(space.seeds_for(budget)), (name, budget)


def test_readme_examples_load(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", (PACKAGE / "README.md").read_text(), re.S)
    space = load_space(str(_write(tmp_path, blocks[0])))
    assert [p.label for p in space.points()] == ["base", "stem_kernel=7", "dropout=0.4", "dropout=0.8"]
    assert space.base_seeds_for("cpu") == (0, 1, 2, 3) and space.num_trials("full") == 4 * 3 + 1
    example, recipe = blocks
    grid = example.replace(example[example.index("factors:"):example.index("design:")], recipe)
    grid = re.sub(r"\nbase_seeds:[^\n]*", "", grid.replace("design: one_at_a_time", "design: grid"))  # no base in a grid
    space = load_space(str(_write(tmp_path, grid)))
    assert [p.label for p in space.points()] == ["optimizer=sgd,lr=0.001", "optimizer=adamax,lr=0.002"]


def test_multi_key_factor_one_at_a_time(tmp_path):
    factors = {"recipe": {"levels": [{"optimizer": "adam", "lr": 0.001}, {"optimizer": "sgd", "lr": 0.01}]}}
    space = load_space(str(_write(tmp_path, _with(VALID, factors=factors, base={**VALID["base"], "optimizer": "adam"}))))
    base, point = space.points()
    assert point.label == "optimizer=sgd,lr=0.01" and point.factor == "recipe" and space.factors[0].keys == ("optimizer", "lr")
    params = {**space.config("cpu"), "design_point": point.param()}
    assert trial_config(params) == space.config("cpu", point) and trial_config(params)["optimizer"] == "sgd"


def test_sample_checks_values_against_every_model(tmp_path):
    # stem_kernel 7 is fine for resnet18 but not for basecnn: a combination, caught at trial start
    factors = {"model": {"choice": ["basecnn", "resnet18"]}, "stem_kernel": {"choice": [3, 7]}}
    base = {"model": "resnet18", "lr": 0.001}
    load_space(str(_write(tmp_path, _with(SAMPLE, factors=factors, base=base))))


BAD = [
    # (space or raw text, substrings the message must hold besides the file name)
    (_with(VALID, desription="x"), ["unknown top-level key 'desription'", "allowed keys are"]),
    ({k: v for k, v in VALID.items() if k != "design"}, ["missing key 'design'"]),
    (_with(VALID, description=""), ["description:", "non-empty string"]),
    (_with(VALID, factors={"lerning_rate": {"levels": [0.1]}}), ["factors: unknown key 'lerning_rate'", "TrainConfig keys are:", "lr,"]),
    (_with(VALID, factors={"lr": [0.1, 0.01]}), ["factors.lr:", "levels"]),
    (_with(VALID, factors={"lr": {"levels": [0.001], "choice": [0.1]}}), ["factors.lr:", "exactly one", "levels and choice"]),
    (_with(VALID, factors={"lr": {}}), ["factors.lr:", "exactly one", "none"]),
    (_with(VALID, factors={"lr": {"levels": []}}), ["factors.lr.levels:", "non-empty list"]),
    (_with(VALID, factors={"lr": {"levels": [0.001, 0.01, 0.01]}}), ["factors.lr.levels[2]:", "duplicate of levels[1]"]),
    (_with(VALID, factors={"lr": {"levels": [0.01, 0.001]}}), ["factors.lr.levels[0]:", "baseline", "lr=0.001"]),
    (_with(VALID, factors={"momentum": {"levels": [0.9, 0.0]}}), ["factors.momentum.levels[0]:", "base must set momentum"]),
    (_with(VALID, factors={"seed": {"levels": [0, 1]}}), ["factors.seed:", "seeds"]),
    (_with(SAMPLE, factors={"lr": {"normal": [0.0, 1.0]}}), ["factors.lr:", "unknown key 'normal'", "loguniform"]),
    (_with(SAMPLE, factors={"dropout": {"uniform": [0.5, 0.1]}}), ["factors.dropout.uniform:", "low < high"]),
    (_with(SAMPLE, factors={"lr": {"loguniform": [0.0, 0.1]}}), ["factors.lr.loguniform:", "low > 0"]),
    (_with(SAMPLE, factors={"lr": {"uniform": [0.1]}}), ["factors.lr.uniform:", "[low, high]"]),
    (_with(SAMPLE, factors={"epochs": {"randint": [1.5, 4]}}), ["factors.epochs.randint[0]:", "integer"]),
    (_with(SAMPLE, factors={"epochs": {"uniform": [1, 4]}}), ["factors.epochs.uniform[0]:", "epochs must be an integer"]),
    (_with(VALID, design="random"), ["design:", "one_at_a_time, grid, sample", "'random'"]),
    (_with(GRID, factors={"lr": {"loguniform": [1.0e-4, 1.0e-2]}}), ["factors.lr.loguniform:", "design: sample", "grid"]),
    (_with(VALID, num_samples=10), ["num_samples:", "design sample only"]),
    (_with(SAMPLE, num_samples=0), ["num_samples:", ">= 1"]),
    (_with(VALID, metric="accuracy"), ["metric:", "val_acc"]),
    (_with(VALID, mode="up"), ["mode:", "max or min"]),
    (_with(VALID, seeds=[]), ["seeds:", "non-empty list"]),
    (_with(VALID, seeds=["a"]), ["seeds[0]:", "integers >= 0"]),
    (_with(VALID, seeds=[0, 0]), ["seeds[1]:", "duplicate"]),
    (_with(VALID, seeds=0), ["seeds:", "count n >= 1"]),
    (_with(VALID, budgets={**VALID["budgets"], "full": {"seeds": [1, 1]}}), ["budgets.full.seeds[1]:", "duplicate"]),
    (_with(VALID, budgets={**VALID["budgets"], "full": {"seeds": 0}}), ["budgets.full.seeds:", "count n >= 1"]),
    (_with(VALID, scheduler="pbt"), ["scheduler:", "asha", "fifo", "'pbt'"]),
    (_with(VALID, base_seeds=[0, -1]), ["base_seeds[1]:", "integers >= 0"]),
    (_with(VALID, budgets={**VALID["budgets"], "cpu": {"base_seeds": "4"}}), ["budgets.cpu.base_seeds:", "count n >= 1"]),
    (_with(GRID, base_seeds=4), ["base_seeds: needs design one_at_a_time", "no shared base point"]),
    (_with(VALID, seeds=[0, 1], budgets={**VALID["budgets"], "full": {"base_seeds": [1, 2, 3]}}),
     ["budgets.full.base_seeds: must include every seed", "budget full; add 0"]),
    (_with(VALID, seeds=[0, 5], base_seeds=4), ["base_seeds: must include every seed", "budget smoke; add 5"]),
    (_with(VALID, base={**VALID["base"], "seed": 1}), ["base.seed:", "seeds"]),
    (_with(VALID, base={**VALID["base"], "lerning_rate": 1}), ["base: unknown key 'lerning_rate'", "TrainConfig keys are:"]),
    (_with(VALID, base={**VALID["base"], "optimizer": "rmsprop"}), ["base:", "optimizer must be one of"]),
    (_with(VALID, budgets={**VALID["budgets"], "huge": {}}), ["budgets: unknown budget 'huge'", "smoke, cpu, full"]),
    (_with(VALID, budgets={b: v for b, v in VALID["budgets"].items() if b != "full"}), ["budgets: missing budget 'full'"]),
    (_with(VALID, budgets={**VALID["budgets"], "cpu": {"epoch": 3}}), ["budgets.cpu: unknown key 'epoch'", "grace_period, reduction_factor"]),
    (_with(VALID, budgets={**VALID["budgets"], "cpu": {"width": 0.0}}), ["budgets.cpu:", "width"]),
    (_with(VALID, budgets={**VALID["budgets"], "smoke": {"epochs": 2, "grace_period": 3}}), ["budgets.smoke.grace_period:", "epochs (2)"]),
    (_with(VALID, budgets={**VALID["budgets"], "smoke": {"reduction_factor": 1}}), ["budgets.smoke.reduction_factor:", ">= 2"]),
    (_with(VALID, factors={"stem_kernel": {"levels": [3, 5]}}), ["factors.stem_kernel.levels[1]:", "stem_kernel must be 3 or 7", "got 5"]),
    (_with(VALID, factors={"dropout": {"levels": [0.0, 1.5]}}), ["factors.dropout.levels[1]:", "dropout must be a number in [0, 1)"]),
    (_with(VALID, factors={"lr_decay": {"levels": [0.9, 1.5]}}, base={**VALID["base"], "lr_decay": 0.9}),
     ["factors.lr_decay.levels[1]:", "lr_decay must be in (0, 1]"]),
    (_with(GRID, factors={"model": {"levels": ["resnet18", "basecnn"]}, "stem_kernel": {"levels": [3, 7]}}),
     ["factors.model.levels[1] + factors.stem_kernel.levels[0]:", "does not take option(s) stem_kernel", "model=basecnn,stem_kernel=3"]),
    (_with(SAMPLE, factors={"stem_kernel": {"choice": [3, 5]}}), ["factors.stem_kernel.choice[1]:", "stem_kernel must be 3 or 7"]),
    (_with(SAMPLE, factors={"dropout": {"uniform": [0.0, 1.5]}}), ["factors.dropout.uniform[1]:", "dropout"]),
    (_with(SAMPLE, factors={"model": {"choice": ["resnet18", "resnet19"]}}), ["factors.model.choice[1]:", "unknown model 'resnet19'"]),
    (_with(VALID, factors={"recipe": {"levels": [{"optimizer": "adam"}, {"lerning_rate": 0.1}]}}),
     ["factors.recipe.levels[1]: unknown key 'lerning_rate'"]),
    (_with(VALID, factors={"recipe": {"levels": [{"lr": 0.001}, 0.1]}}), ["factors.recipe.levels[1]:", "multi-key factor must be a mapping"]),
    (_with(VALID, factors={"optimizer": {"levels": [{"optimizer": "adam"}]}}), ["factors.optimizer.levels[0]:", "not a TrainConfig key"]),
    (_with(VALID, factors={"lr": {"levels": [0.001, 0.01]}, "recipe": {"levels": [{"lr": 0.001}, {"lr": 0.1}]}}),
     ["factors.recipe:", "sets lr, which factors.lr also sets"]),
    ("description: [unclosed\n", ["line 2, column 1", "YAML syntax error"]),
    ("description: x\ndescription: y\n", ["line 2", "duplicate key 'description'"]),
    ("- a list\n- not a mapping\n", ["must be a mapping", "got list"]),
    ("", ["must be a mapping", "an empty file"]),
]


@pytest.mark.parametrize("space, expected", BAD, ids=[f"{i}-{e[0].split(':')[0][:40]}" for i, (_, e) in enumerate(BAD)])
def test_bad_spaces_raise_one_line_errors(tmp_path, space, expected):
    path = _write(tmp_path, space)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    message = str(info.value)
    assert message.startswith("my.yaml: ") and "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_check_budgets_limits_the_train_config_checks(tmp_path):
    path = _write(tmp_path, _with(VALID, budgets={**VALID["budgets"], "smoke": {"epochs": 2, "dropout": 1.5}}))
    with pytest.raises(SpaceError, match=r"my\.yaml: budgets\.smoke: .*dropout"):
        load_space(str(path))
    assert load_space(str(path), check_budgets=("cpu", "full")).budgets["smoke"].overrides["dropout"] == 1.5
    assert load_space(str(path), check_budgets="full").name == "my"
    with pytest.raises(SpaceError, match="unknown budget 'huge'"):
        load_space(str(path), check_budgets=("huge",))


def test_missing_files_and_names(tmp_path):
    with pytest.raises(SpaceError, match=r"^gone\.yaml: no such file"):
        load_space(str(tmp_path / "gone.yaml"))
    with pytest.raises(SpaceError, match="unknown search space 'ablaton'; shipped spaces: ablation, architectures"):
        load_space("ablaton")
