"""The searcher of fixed designs: Tune gets the plan's list of trials, one by one, in the plan's order.

Tune's grid_search can only expand a product (every point x every seed); a one-at-a-time design whose
base point runs more seeds than the others (`base_seeds`) is not one, and a list also fixes the order
in which trials start (whole replicates first, search_spaces.SearchSpace.trials).
"""
from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from .state import UnsafeState, inspect_pickle

__all__ = ["TrialList"]


class TrialList(Searcher):
    """Suggests `params[0]`, `params[1]`, ... (each merged by Tune into the shared param space), then
    FINISHED. Its saved state is how many it has handed out; the list itself travels in tuner.pkl."""

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
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"handed": self.handed}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            data = f.read()
        try:
            inspect_pickle(data)  # tune.state checked it before Tune started; a plain dict is all it may be
        except UnsafeState as exc:
            raise ValueError(f"{checkpoint_path} {exc}") from None
        state = pickle.loads(data)
        if not isinstance(state, dict) or not isinstance(state.get("handed"), int):
            raise ValueError(f"{checkpoint_path} is not a TrialList state")
        self.handed = min(state["handed"], len(self.params))
