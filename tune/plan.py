"""From a search space and the runner's flags to what Tune runs: the trials, their param space, the plan.

Trial params follow the contract of `search_spaces.trial_config`: the budget-resolved base config
(flat TrainConfig keys) plus `seed`, plus either the factor keys (grid and sample designs) or a
`design_point` dict {label, factor, level} (one-at-a-time design).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnsearch.config import TrainConfig
from search_spaces import SearchSpace, SpaceError

__all__ = ["Plan", "SEARCHES", "SCHEDULERS"]

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("asha", "fifo")


@dataclass(frozen=True)
class Plan:
    space: SearchSpace
    budget: str
    search: str
    scheduler: str
    num_samples: int
    dataset: str | None = None  # overrides the space's data set
    seed: int | None = None  # sample designs: the training seed of every trial (default: the space's first)

    def __post_init__(self) -> None:
        sampled = self.space.design == "sample"
        if sampled and self.search == "grid":
            raise SpaceError(f"{self.space.path.name}: design 'sample' draws its trials; use --search random or optuna")
        if not sampled and self.search != "grid":
            raise SpaceError(f"{self.space.path.name}: --search {self.search} needs a space with design: sample "
                             f"(this one is {self.space.design}); use --search grid")
        if self.num_samples < 1:
            raise SpaceError("--num-samples must be >= 1")

    # What will run ------------------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return self.space.max_epochs(self.budget)

    @property
    def dataset_name(self) -> str:
        """The data set every trial trains on (a space's base may leave it at TrainConfig's default)."""
        return self.base_config().get("dataset", TrainConfig.dataset)

    @property
    def num_trials(self) -> int:
        if self.space.design == "sample":
            return self.num_samples
        return len(self.space.points()) * len(self.space.seeds)

    def base_config(self) -> dict[str, Any]:
        """The base point's flat config at this budget, with the runner's overrides (a fresh dict)."""
        seed = self.seed if self.seed is not None and self.space.design == "sample" else self.space.seeds[0]
        return self._override(self.space.config(self.budget, None, seed))

    def _override(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "dataset": self.dataset} if self.dataset else config

    # What Tune gets -----------------------------------------------------------------------------
    def param_space(self) -> dict[str, Any]:
        # Ray is imported here, not at the top: the runner sets Ray's environment (RAY_AUTH_MODE for
        # --address) after parsing its arguments, and Ray reads it once, at import.
        from ray import tune as ray_tune

        space, base = self.space, self.base_config()
        if space.design == "sample":
            for factor in space.factors:
                base[factor.name] = _domain(factor.distribution) if factor.distribution else ray_tune.choice(list(factor.levels))
            return base
        base["seed"] = ray_tune.grid_search(list(space.seeds))
        if space.design == "one_at_a_time":
            base["design_point"] = ray_tune.grid_search([p.param() for p in space.points()])
        else:
            for factor in space.factors:
                base[factor.name] = ray_tune.grid_search(list(factor.levels))
        return base

    def describe(self) -> list[str]:
        """Lines for --dry-run: one per trial, then the total."""
        lines = [f"space {self.space.name} ({self.space.path}): {self.space.description}",
                 f"design {self.space.design}, budget {self.budget}, {self.num_trials} trial(s), "
                 f"{self.epochs} epoch(s) each at most, {self.num_trials * self.epochs} epochs in total at most"]
        if self.space.design == "sample":
            lines.append(f"base: {_compact(self.base_config())}")
            for factor in self.space.factors:
                drawn = f"{factor.distribution[0]}{list(factor.distribution[1])}" if factor.distribution else f"choice{list(factor.levels)}"
                lines.append(f"  {factor.name} ~ {drawn}")
            lines.append(f"{self.num_samples} draws by {self.search} search")
            return lines
        base = self.base_config()
        lines.append(f"base: {_compact(base)}")
        for i, (point, seed) in enumerate((p, s) for p in self.space.points() for s in self.space.seeds):
            config = self._override(self.space.config(self.budget, point, seed))
            changed = {k: v for k, v in config.items() if k != "seed" and base.get(k) != v}
            lines.append(f"  {i + 1:3d}. {point.label} seed={seed}" + (f": {_compact(changed)}" if changed else ""))
        return lines


def _domain(distribution: tuple[str, tuple]) -> Any:
    from ray import tune as ray_tune

    kind, args = distribution
    return {"choice": lambda a: ray_tune.choice(list(a)), "uniform": lambda a: ray_tune.uniform(*a),
            "loguniform": lambda a: ray_tune.loguniform(*a), "randint": lambda a: ray_tune.randint(*a)}[kind](args)


def _compact(config: dict[str, Any]) -> str:
    order = ("model", "dataset", "epochs", "batch_size", "train_subset", "width", "optimizer", "lr", "lr_schedule",
            "lr_decay", "stem_kernel", "stem_bn", "dropout", "blocks_per_stage", "weight_decay", "seed")
    keys = [k for k in order if k in config] + sorted(k for k in config if k not in order)
    return " ".join(f"{k}={config[k]}" for k in keys if config[k] is not None)
