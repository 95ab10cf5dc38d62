"""Adaptive replication on an experiment folder: the looks at its claims, wave by wave.

The runner (`tune.run --until-decided`) runs a study in waves and keeps, in its ledger (`groups.json`), which
wave each trial (a design point with its seeds) belongs to. `look_at(path, wave=k, ...)` replays looks 1..k of
`analysis.sequential` on the seeds of waves 1..i at look i, so the looks are a function of the folder alone
(a resumed run takes the same decisions): look k's states, the points that get more seeds, and why the study
stops. Each claim level must be one design point (one-at-a-time designs, one-factor grids).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .claims import check_claims, default_claims_file, load_claims
from .comparisons import group_trials, usable_trials, values_at_epoch
from .display import scale
from search_spaces import Ledger, RecordError
from search_spaces.plan import Group, Plan

from .load import Experiment, ExperimentError, load_experiment
from .sequential import DECIDED, HOPELESS, Look, Spending, look
from .verdicts import ClaimOrder

__all__ = ["WaveLook", "look_at", "looks_of", "max_looks", "next_wave"]


def max_looks(first: int, max_seeds: int, block: int) -> int:
    """Looks a study can take: wave 1 with `first` seeds per point, then `block` more per wave up to `max_seeds`."""
    return 1 + max(0, math.ceil((max_seeds - first) / block))


@dataclass(frozen=True)
class WaveLook:
    """Look `look.k` at an experiment's claims: `look` (analysis.sequential.Look), the claims' texts, the
    points that get more seeds (`extend`) and why the study stops (`stop`, "" to go on)."""

    look: Look
    texts: tuple[str, ...]

    @property
    def extend(self) -> tuple[str, ...]:
        return self.look.more_seeds

    @property
    def stop(self) -> str:
        return self.look.stop

    def rows(self) -> list[dict[str, Any]]:
        """One row per claim pair: the look, the claim, its state and verdict, the pair's interval."""
        out = []
        for text, state in zip(self.texts, self.look.claims):
            for pair in state.verdict.pairs:
                test = pair.test
                out.append({"look": self.look.k, "claim": text, "state": state.state, "verdict": state.verdict.verdict,
                            "decided_at": state.look, "pair": f"{test.a} {test.relation} {test.b}",
                            "diff": _num(test.diff), "low": _num(test.low), "high": _num(test.high),
                            "confidence": float(test.confidence),
                            "n_a": int(test.n_a), "n_b": int(test.n_b)})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.look.k, "level": self.look.level, "stop": self.stop, "extend": list(self.extend),
                "rows": self.rows()}

    def lines(self) -> list[str]:
        """What the runner prints after the wave: each claim's state and its pairs' intervals."""
        lines = [f"look {self.look.k} of {self.look.spending.looks} (level {self.look.level:.4f}):"]
        for text, state in zip(self.texts, self.look.claims):
            pairs = "; ".join(f"{p.test.a} {p.test.relation} {p.test.b} {p.test.diff:+.2f} "
                              f"[{p.test.low:+.2f}, {p.test.high:+.2f}]" for p in state.verdict.pairs
                              if np.isfinite(p.test.low))
            where = f" at look {state.look}" if state.state in (DECIDED, HOPELESS) and state.look != self.look.k else ""
            lines.append(f"  {text}: {state.state}{where}, {state.verdict.verdict} ({pairs})")
        lines.append(f"  -> {'stop: ' + self.stop if self.stop else 'more seeds for ' + ', '.join(self.extend)}")
        return lines


def looks_of(experiment: Experiment, *, waves: int, max_seeds: int, block: int) -> list[WaveLook]:
    """Looks 1..`waves` at the experiment's claims file, each on the seeds of the waves up to it."""
    path = default_claims_file(experiment.record.space)
    if path is None:
        raise ExperimentError(f"space {experiment.record.space} has no claims file: nothing to decide")
    claims = load_claims(path)
    check = check_claims(experiment, claims)  # validates the file against the experiment; gives the texts
    trials = usable_trials(experiment)
    wave_of = _waves(experiment)
    orders, points = [], set()
    for claim in claims:
        where = {k: v for k, v in claim.where.items()}
        labels = []
        for level in claim.order:
            found = group_trials(experiment, claim.factor, level, where=where, trials=experiment.trials)["label"].unique()
            if len(found) != 1:
                raise ExperimentError(f"claim {claim.text}: level {claim.label(level)} is {len(found)} design points; "
                                      "adaptive replication needs each level to be one point")
            labels.append(str(found[0]))
        points.update(labels)
        margin = claim.margin if claim.margin is not None else claims.margin
        orders.append(ClaimOrder(claim.text, tuple(labels), claim.relations, margin))
    first = min(int((experiment.trials["label"] == p).sum()) for p in points) if points else 1
    spending = Spending(looks=max_looks(first, max_seeds, block))
    # Every design point's values (points) at the last epoch: the seed noise is pooled over all of them.
    values_all = scale(experiment.metric) * values_at_epoch(experiment, trials, experiment.max_epochs)
    wave = trials["trial_id"].map(wave_of).fillna(1).to_numpy()
    labels = trials["label"].to_numpy()
    looks: list[WaveLook] = []
    previous = None
    for k in range(1, min(waves, spending.looks) + 1):
        values = {label: values_all.to_numpy(dtype=float)[(labels == label) & (wave <= k)]
                  for label in dict.fromkeys(experiment.trials["label"])}
        current = look(values, orders, k=k, spending=spending, max_seeds=max_seeds, previous=previous,
                       margin=claims.margin)
        looks.append(WaveLook(current, tuple(v.claim.text for v in check)))
        previous = current
    return looks


def look_at(path: str, *, wave: int, max_seeds: int, block: int) -> WaveLook:
    """The look after `wave` at the experiment folder `path` (replaying the looks before it)."""
    return looks_of(load_experiment(path), waves=wave, max_seeds=max_seeds, block=block)[-1]


def next_wave(plan: Plan, path: str, ledger: Ledger) -> tuple[WaveLook, list[Group], str | None]:
    """After the latest wave of the runner's `ledger` for `plan` in the folder `path`: the look at the claims
    (recorded in the ledger), the next wave's trials (planned in the ledger; none: the study stops) and why it
    stops."""
    wave = ledger.wave
    current = look_at(path, wave=wave, max_seeds=plan.seed_cap, block=len(plan.seeds))
    ledger.looks = [*[x for x in ledger.looks if x["wave"] != wave], current.to_json()]
    ledger.write()
    if current.stop:
        return current, [], current.stop
    groups = plan.next_groups(ledger, current.extend)
    if not groups:
        return current, [], "every undecided point has its most seeds"
    ledger.plan(groups)
    return current, groups, None


def _waves(experiment: Experiment) -> dict[str, int]:
    """trial id (a seed) -> its wave, from the runner's ledger (none: every seed is wave 1)."""
    try:
        groups = Ledger.read(experiment.filesystem, experiment.root).groups
    except RecordError:
        return {}
    out = {}
    for trial_id, folder in zip(experiment.trials["trial_id"], experiment.trials["folder"]):
        group = str(folder).split("/", 1)[0]
        if group in groups:
            out[trial_id] = int(groups[group]["wave"])
    return out


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
