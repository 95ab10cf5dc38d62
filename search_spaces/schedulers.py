"""Trial schedulers by name: what each needs from a budget, how it is built, how it describes itself.

`python -m tune.run --scheduler NAME` takes its choices from `SCHEDULERS`; a budget may set every key
in `SETTINGS`; `tune/` builds the entry's Tune scheduler; the experiment record keeps the name and
settings, and `analysis/` asks the entry for its rungs and words. Adding a scheduler is one entry
here (plus a setting, if it needs a new budget key).

Nothing here imports Ray: `build` gets the `ray.tune.schedulers` module from `tune/`, so that the
search spaces and the analysis can read this table without starting Ray.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["SETTINGS", "SCHEDULERS", "DEFAULT_SCHEDULER", "Setting", "Scheduler", "scheduler"]


@dataclass(frozen=True)
class Setting:
    """A scheduler setting a budget gives (and `tune.run` overrides with --NAME): a whole number of
    epochs or a factor, at least `least`, `default` when the budget leaves it out."""

    name: str
    least: int
    default: int
    help: str
    within_epochs: bool = False  # counted in epochs, so at most the budget's epochs

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any, epochs: Any = None) -> str | None:
        """What is wrong with `value` (a message without the key), or None."""
        if isinstance(value, bool) or not isinstance(value, int) or value < self.least:
            return f"must be an integer >= {self.least}, got {value!r}"
        if self.within_epochs and isinstance(epochs, int) and value > epochs:
            return f"{value} exceeds the budget's epochs ({epochs})"
        return None


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("grace_period", 1, 1, "epochs before the first cut (default: the budget's)", within_epochs=True),
    Setting("reduction_factor", 2, 2, "keep 1/N at each rung (default: the budget's)"),
)}


class Scheduler:
    """FIFO: every trial runs to its end. The other entries override what they change."""

    name = "fifo"
    title = "FIFO"
    about = "runs all to the end"  # for --help
    keys: tuple[str, ...] = ()  # the SETTINGS it takes
    stops_early = False  # whether it can end a trial before its last epoch

    def build(self, schedulers: ModuleType, max_t: int, settings: Mapping[str, int]) -> Any:
        """The Tune scheduler; `schedulers` is `ray.tune.schedulers`, metric and mode come from TuneConfig."""
        return schedulers.FIFOScheduler()

    def rungs(self, max_t: int, settings: Mapping[str, int]) -> list[int]:
        """The epochs below `max_t` at which it may stop trials."""
        return []

    def terms(self, settings: Mapping[str, int]) -> str:
        """Its settings in words, e.g. `grace 2, keep 1/3`; empty without settings."""
        return ""

    def plan(self, settings: Mapping[str, int], metric: str) -> str:
        """How the runner's plan line names it."""
        return self.title

    def summary(self, settings: Mapping[str, int]) -> str:
        """How a report's summary names it."""
        return self.title


class Asha(Scheduler):
    name, title, keys, stops_early = "asha", "ASHA", ("grace_period", "reduction_factor"), True
    about = "stops weak trials early"

    def build(self, schedulers: ModuleType, max_t: int, settings: Mapping[str, int]) -> Any:
        # One rung per `reduction_factor`-fold more epochs, counted in reported epochs.
        return schedulers.ASHAScheduler(time_attr="epoch", max_t=max_t, **settings)

    def rungs(self, max_t: int, settings: Mapping[str, int]) -> list[int]:
        """grace period x reduction factor^k below max_t, as Ray's ASHAScheduler places them."""
        grace, factor = settings["grace_period"], settings["reduction_factor"]
        count = int(math.log(max_t / grace) / math.log(factor) + 1)
        return sorted(r for r in (grace * factor**k for k in range(count)) if r < max_t)

    def terms(self, settings: Mapping[str, int]) -> str:
        return f"grace {settings['grace_period']}, keep 1/{settings['reduction_factor']}"

    def plan(self, settings: Mapping[str, int], metric: str) -> str:
        return (f"ASHA on {metric} (grace {settings['grace_period']} epochs, keep 1/{settings['reduction_factor']} "
                "per rung)")

    def summary(self, settings: Mapping[str, int]) -> str:
        return f"ASHA ({self.terms(settings)} per rung)"


class HyperBand(Scheduler):
    """Synchronous HyperBand (Li et al. 2018) as Ray runs it: brackets of successive halving, from
    aggressive (first cut after few epochs) to none (every trial of the bracket runs max_t); a trial
    waits paused at a rung until its bracket has reached it."""

    name, title, keys, stops_early = "hyperband", "HyperBand", ("reduction_factor",), True
    about = "halves brackets of trials, pausing them at rungs"

    def build(self, schedulers: ModuleType, max_t: int, settings: Mapping[str, int]) -> Any:
        return schedulers.HyperBandScheduler(time_attr="epoch", max_t=max_t, **settings)

    def rungs(self, max_t: int, settings: Mapping[str, int]) -> list[int]:
        """Every bracket's milestones below max_t, as Ray's HyperBandScheduler sets them: bracket s
        starts at int(max_t / eta^s) epochs and multiplies by eta at each of its s halvings; where that
        ends below max_t (rounding), the bracket stops its last trials there."""
        eta = settings["reduction_factor"]
        brackets = int(round(math.log(max_t) / math.log(eta))) + 1
        rungs = set()
        for s in range(brackets):
            r = int(max_t * eta**-s)
            for _ in range(s + 1 if r > 0 else 0):
                rungs.add(r)
                r = int(min(r * eta, max_t))
        return sorted(r for r in rungs if r < max_t)

    def terms(self, settings: Mapping[str, int]) -> str:
        return f"keep 1/{settings['reduction_factor']} per rung"

    def plan(self, settings: Mapping[str, int], metric: str) -> str:
        return f"HyperBand on {metric} ({self.terms(settings)})"

    def summary(self, settings: Mapping[str, int]) -> str:
        return f"HyperBand ({self.terms(settings)})"


SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Asha(), Scheduler(), HyperBand())}
DEFAULT_SCHEDULER = "asha"  # finds the best config at a fraction of FIFO's epochs (bench/RESULTS.md)


def scheduler(name: str) -> Scheduler:
    """The entry `name`; ValueError listing the known ones."""
    try:
        return SCHEDULERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scheduler {name!r}; schedulers: {', '.join(SCHEDULERS)}") from None
