"""The plan as Tune gets it: the shared param space, and for fixed designs the list of trials, one by one.

Tune's grid_search can only expand a product (every point x every seed); a one-at-a-time design whose
base point runs more seeds than the others (`base_seeds`) is not one, and a list also fixes the order
in which trials start (whole replicates first, search_spaces.SearchSpace.trials).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from ray import tune as ray_tune
from ray.tune.search import Searcher

__all__ = ["TrialList", "param_space", "sampled_searcher"]


def param_space(plan) -> dict[str, Any]:
    """What every trial of `plan` (a search_spaces.Plan) shares, as Tune's param space: a sampled design's
    factors as Tune domains; a fixed design's trials are the plan's `group_params`, which TrialList hands out."""
    space = plan.shared_params()
    for factor in plan.space.factors if plan.space.design == "sample" else ():
        space[factor.name] = _domain(factor.distribution) if factor.distribution else \
            ray_tune.choice(list(factor.levels))
    return space


def _domain(distribution: tuple[str, tuple]) -> Any:
    kind, args = distribution
    return {"choice": lambda a: ray_tune.choice(list(a)), "uniform": lambda a: ray_tune.uniform(*a),
            "loguniform": lambda a: ray_tune.loguniform(*a), "randint": lambda a: ray_tune.randint(*a)}[kind](args)



class TrialList(Searcher):
    """Suggests `params[0]`, `params[1]`, ... (each merged by Tune into the shared param space), then
    FINISHED. Its saved state (JSON) is how many it has handed out; --resume never reads it (the runner
    builds the list of what is left from its own ledger)."""

    def __init__(self, params: list[dict[str, Any]], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.params = [dict(p) for p in params]
        self.handed = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the shared config is Tune's param space; the trials' own keys are ours

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.handed >= len(self.params):
            return Searcher.FINISHED
        self.handed += 1
        return dict(self.params[self.handed - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the list does not depend on results

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"handed": self.handed}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.handed = min(int(json.load(f)["handed"]), len(self.params))


def sampled_searcher(plan, ledger, study: str | None) -> tuple[Any, int]:
    """A sampled design's searcher and how many draws are left, given the runner's `ledger` (a
    search_spaces.Ledger): on --resume the draws that had not ended are drawn again first (from scratch: their
    folders are named by Tune's trial id). `study`: the SQLite file of an Optuna study (None: in memory)."""
    done = ledger.count("terminated")
    again = [g for g in ledger.groups.values() if g["status"] in ("running", "error") and g.get("params")]
    factors = [f.name for f in plan.space.factors]
    points = [{k: g["params"][k] for k in factors if k in g["params"]} for g in again] or None
    if again:
        print(f"resume: {done} draw(s) ended; {len(again)} that had not are drawn again from scratch", flush=True)
        for g in again:
            g["status"] = "replaced"  # its folder stays, unfinished; the new draw has a folder of its own
        ledger.write()
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        if study is None:
            return OptunaSearch(seed=plan.seed, points_to_evaluate=points), plan.num_samples - done
        from optuna.storages import RDBStorage

        # Optuna's own record of the study (trials, values per epoch), for optuna-dashboard and for
        # --resume: its sampler reopens with every finished trial (create_study(load_if_exists=True)).
        return (OptunaSearch(seed=plan.seed, storage=RDBStorage(f"sqlite:///{study}"), study_name="cnnsearch",
                             points_to_evaluate=points), plan.num_samples - done)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # After a resume the draws must not repeat the first run's: the random state also counts the ended draws.
    state = plan.seed if not done else np.random.default_rng([plan.seed or 0, done])
    return BasicVariantGenerator(points_to_evaluate=points, random_state=state), plan.num_samples - done
