"""The searcher of fixed designs: Tune gets the plan's list of trials, one by one, in the plan's order.

Tune's grid_search can only expand a product (every point x every seed); a one-at-a-time design whose
base point runs more seeds than the others (`base_seeds`) is not one, and a list also fixes the order
in which trials start (whole replicates first, search_spaces.SearchSpace.trials).
"""
from __future__ import annotations

import json
from typing import Any

from ray.tune.search import Searcher

__all__ = ["TrialList"]


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
