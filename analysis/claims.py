"""Claims: the conclusions the reports drew, as orderings of factor levels, and verdicts on them.

A claims file (YAML; see README.md here) lists claims such as `stem_kernel: [3, 7]` (3 is better than
7), each with its source, the values the report gave and the statement it drew. A claim is
`reproduced` when every adjacent pair in its order is confirmed (the bootstrap interval of the
difference excludes zero in the claimed direction), `contradicted` when some pair is reversed with its
interval excluding zero, `inconclusive` otherwise, and `not tested` when the experiment did not vary
the claim's factor.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cnnsearch.yamlio import load_yaml
from search_spaces import METRICS, TRAIN_KEYS, level_key, level_label

from .comparisons import Comparison, compare
from .display import ci, num, scale
from .load import Experiment
from .stats import CONFIDENCE, N_RESAMPLES, SEED

__all__ = ["Claim", "ClaimSet", "ClaimsError", "Verdict", "VERDICTS", "load_claims", "check_claims", "verdicts_table",
           "default_claims_file", "CLAIMS_DIR"]

CLAIMS_DIR = Path(__file__).resolve().parent / "claims"
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not tested")
_CLAIM_KEYS = ("source", "statement", "reported", "where", "id")
_TOP_KEYS = ("space", "metric", "claims")


class ClaimsError(ValueError):
    """A claims file that cannot be checked; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Claim:
    """`order` lists level keys, best first; `reported` the report's value per level (None: not
    given), in `unit`s; `where` fixes other factors' levels (e.g. the model a recipe ranking holds for)."""

    factor: str
    order: tuple[str, ...]
    labels: tuple[str, ...] = ()  # the levels as the file writes them, for display
    source: str = ""
    statement: str = ""
    reported: tuple[float | None, ...] = ()
    where: Mapping[str, str] = field(default_factory=dict)
    where_values: Mapping[str, Any] = field(default_factory=dict)  # as the file writes them
    id: str = ""
    file: str = ""
    index: int = 0

    @property
    def key(self) -> str:
        """Where the claim sits in its file, for error messages: `claims[2].lr_decay`."""
        return f"claims[{self.index}].{self.factor}"

    def label(self, key: str) -> str:
        """How the claims file writes level `key`."""
        return dict(zip(self.order, self.labels)).get(key, key)

    @property
    def text(self) -> str:
        where = f" ({'; '.join(f'{k}: {level_label(v)}' for k, v in self.where_values.items())})" if self.where else ""
        return f"{self.factor}{where}: {' > '.join(self.label(k) for k in self.order)}"


@dataclass(frozen=True)
class ClaimSet:
    """A parsed claims file: the metric its `reported` values are in, and the claims."""

    claims: tuple[Claim, ...]
    metric: str = "val_acc"
    space: str | None = None
    file: str = ""

    def __iter__(self):
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)


@dataclass(frozen=True)
class Verdict:
    """What an experiment says about `claim`: `verdict` (one of VERDICTS), the comparisons of the
    claimed order's adjacent pairs it rests on (empty when not tested), and a note saying why
    (what was reversed or open, what was not tested, or that a pair was judged before the last epoch)."""

    claim: Claim
    verdict: str  # one of VERDICTS
    comparisons: tuple[Comparison, ...] = ()  # adjacent pairs of the claimed order
    note: str = ""


# ------------------------------------------------------------------------------------------ files
def default_claims_file(space_name: str) -> Path | None:
    """The shipped claims file for a space (`analysis/claims/<name>.yaml`), if there is one."""
    path = CLAIMS_DIR / f"{space_name}.yaml"
    return path if path.is_file() else None


def load_claims(path: str | Path) -> ClaimSet:
    """Parse a claims file; raises ClaimsError (one line, naming the file and the key)."""
    path = Path(path)
    name = path.name
    try:
        data = load_yaml(path.read_text())
    except OSError as exc:
        raise ClaimsError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ClaimsError(f"{name}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("claims"), list):
        raise ClaimsError(f"{name}: expected a mapping with a `claims` list")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ClaimsError(f"{name}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(_TOP_KEYS)}")
    metric = data.get("metric", "val_acc")
    if metric not in METRICS:
        raise ClaimsError(f"{name}: metric: must be {', '.join(list(METRICS)[:-1])} or {list(METRICS)[-1]}, got {metric!r}")
    claims = tuple(_parse_claim(item, i, name) for i, item in enumerate(data["claims"]))
    return ClaimSet(claims=claims, metric=metric, space=data.get("space"), file=name)


def _parse_claim(item: Any, index: int, file: str) -> Claim:
    where = f"{file}: claims[{index}]"
    if not isinstance(item, Mapping):
        raise ClaimsError(f"{where}: expected a mapping such as {{stem_kernel: [3, 7], source: E}}")
    factors = [k for k in item if k not in _CLAIM_KEYS]
    if len(factors) != 1:
        raise ClaimsError(f"{where}: give exactly one factor with its ordered levels (besides "
                          f"{', '.join(_CLAIM_KEYS)}), got {', '.join(map(str, factors)) or 'none'}")
    factor = str(factors[0])
    where = f"{where}.{factor}"
    levels = item[factor]
    if not isinstance(levels, list) or len(levels) < 2:
        raise ClaimsError(f"{where}: expected a list of two or more levels, best first")
    order = tuple(level_key(v) for v in levels)
    if len(set(order)) != len(order):
        raise ClaimsError(f"{where}: a level appears twice")
    reported = _parse_reported(item.get("reported"), levels, order, where)
    fixed = item.get("where") or {}
    if not isinstance(fixed, Mapping):
        raise ClaimsError(f"{where}: where: expected a mapping of factor: level")
    return Claim(factor=factor, order=order, labels=tuple(level_label(v) for v in levels), source=str(item.get("source", "")),
                 statement=" ".join(str(item.get("statement", "")).split()), reported=reported,
                 where={str(k): level_key(v) for k, v in fixed.items()},
                 where_values={str(k): v for k, v in fixed.items()}, id=str(item.get("id", "")),
                 file=file, index=index)


def _parse_reported(reported: Any, levels: list, order: tuple[str, ...], where: str) -> tuple[float | None, ...]:
    if reported is None:
        return (None,) * len(order)
    if isinstance(reported, list):
        if len(reported) != len(order):
            raise ClaimsError(f"{where}: reported: a list needs one value per level ({len(order)}), got {len(reported)}")
        values = reported
    elif isinstance(reported, Mapping):
        by_key = {level_key(k): v for k, v in reported.items()}
        extra = sorted(set(by_key) - set(order))
        if extra:
            raise ClaimsError(f"{where}: reported: level(s) {', '.join(extra)} are not in the claim's order")
        values = [by_key.get(k) for k in order]
    else:
        raise ClaimsError(f"{where}: reported: expected a list (one value per level) or a mapping level: value")
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ClaimsError(f"{where}: reported: values must be numbers or null, got {v!r}")
    return tuple(None if v is None else float(v) for v in values)


# --------------------------------------------------------------------------------------- verdicts
def _known_factor(claim: Claim, experiment: Experiment) -> bool:
    """A TrainConfig key, a factor of the experiment, or a multi-key factor (levels set TrainConfig keys)."""
    if claim.factor in TRAIN_KEYS or experiment.factor(claim.factor) is not None:
        return True
    return all(all(part.split("=", 1)[0] in TRAIN_KEYS for part in key.split(",")) and "=" in key
               for key in claim.order)


def _untested(claim: Claim, experiment: Experiment) -> str | None:
    """Why the experiment cannot test `claim` (a note), None if it can; raises ClaimsError for a claim
    that names an unknown factor or a level the experiment does not have."""
    if not _known_factor(claim, experiment):
        known = ", ".join(f.name for f in experiment.factors)
        raise ClaimsError(f"{claim.file}: {claim.key}: unknown factor {claim.factor!r} (the experiment's factors: "
                          f"{known or 'none'}; or any TrainConfig key)")
    spec = experiment.factor(claim.factor)
    if spec is None or claim.factor not in experiment.varied():
        return f"the experiment does not vary {claim.factor}"
    if spec.continuous:
        return f"{claim.factor} was drawn from a continuous distribution, not run at levels"
    levels = list(spec.by_key())
    for level in claim.order:
        if level not in levels:
            raise ClaimsError(f"{claim.file}: {claim.key}: level {level} is not in the experiment "
                              f"(levels: {', '.join(levels)})")
    for name, level in claim.where.items():
        other = experiment.factor(name)
        if other is None:  # not a factor here: the restriction holds if the base config agrees with it
            note = _where_on_base(claim, name, experiment)
            if note:
                return note
            continue
        other_levels = list(other.by_key())
        if level not in other_levels:
            raise ClaimsError(f"{claim.file}: {claim.key}: where: {name}: level {level} is not in the experiment "
                              f"(levels: {', '.join(other_levels)})")
    return None


def _where_on_base(claim: Claim, name: str, experiment: Experiment) -> str | None:
    """A `where` entry on a factor the experiment does not have: a TrainConfig key (or a mapping of
    them) that its base config must match; a note saying why not, else None."""
    value = claim.where_values[name]
    settings = dict(value) if isinstance(value, Mapping) else {name: value}
    if not all(k in TRAIN_KEYS for k in settings):
        raise ClaimsError(f"{claim.file}: {claim.key}: where: unknown factor {name!r}")
    base = experiment.record.base
    differ = [k for k, v in settings.items() if level_key(base.get(k)) != level_key(v)]
    if differ:
        ran = ", ".join(f"{k}={level_label(base.get(k))}" for k in differ)
        return f"the experiment ran {ran}; the claim is about {name}={level_label(value)}"
    return None


def check_claims(experiment: Experiment, claims: ClaimSet | list[Claim], *, metric: str | None = None,
                 n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED) -> list[Verdict]:
    """A verdict per claim. Validates every claim first (ClaimsError for unknown factors or levels)."""
    metric = metric or getattr(claims, "metric", None) or experiment.metric
    notes = [_untested(claim, experiment) for claim in claims]  # all errors before any work
    verdicts = []
    for claim, note in zip(claims, notes):
        if note is not None:
            verdicts.append(Verdict(claim, "not tested", (), note))
            continue
        where = {k: v for k, v in claim.where.items() if experiment.factor(k) is not None}
        pairs = tuple(compare(experiment, claim.factor, a, b, where=where, metric=metric, n_resamples=n_resamples,
                              confidence=confidence, seed=seed)
                      for a, b in zip(claim.order, claim.order[1:]))
        verdicts.append(_early(_verdict(claim, pairs), experiment.max_epochs))
    return verdicts


def early_epochs(verdict: Verdict, max_epochs: int) -> list[int]:
    """The epochs before the last at which the verdict's pairs were compared (ASHA stopped a level)."""
    return sorted({c.epoch for c in verdict.comparisons if c.epoch is not None and c.epoch < max_epochs})


def _early(verdict: Verdict, max_epochs: int) -> Verdict:
    """Flag a verdict reached before the last epoch: effects that build up over training may not have
    appeared yet, and an early order can reverse (bench/RESULTS.md, ASHA economy: stem BN at epoch 1)."""
    epochs = early_epochs(verdict, max_epochs)
    if not epochs:
        return verdict
    early = (f"judged at epoch {', '.join(map(str, epochs))} of {max_epochs} (trials of a level stopped early); "
             f"--scheduler fifo judges every level at the last epoch")
    return dataclasses.replace(verdict, note="; ".join(n for n in (verdict.note, early) if n))


def _verdict(claim: Claim, pairs: tuple[Comparison, ...]) -> Verdict:
    missing = sorted({claim.label(c.a) for c in pairs if c.n_a == 0} | {claim.label(c.b) for c in pairs if c.n_b == 0})
    if missing:
        return Verdict(claim, "inconclusive", pairs, f"no trials at {', '.join(missing)}")
    signs = [c.better for c in pairs]
    if all(s == 1 for s in signs):
        return Verdict(claim, "reproduced", pairs)
    reversed_ = [f"{claim.label(c.b)} > {claim.label(c.a)}" for c in pairs if c.better == -1]
    if reversed_:
        return Verdict(claim, "contradicted", pairs, f"reversed: {'; '.join(reversed_)}")
    undefined = [f"{claim.label(c.a)} vs {claim.label(c.b)}" for c in pairs if not c.diff.defined]
    if undefined:
        return Verdict(claim, "inconclusive", pairs, f"interval undefined (one seed) for {'; '.join(undefined)}")
    open_ = [f"{claim.label(c.a)} vs {claim.label(c.b)}" for c in pairs if c.better == 0]
    return Verdict(claim, "inconclusive", pairs, f"interval includes 0 for {'; '.join(open_)}")


# ---------------------------------------------------------------------------------------- display
def verdicts_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per claim, for display: the claim, its source, the report's values, ours (per adjacent
    pair: means at the compared epoch and the difference with its 95% interval), the verdict."""
    rows = []
    for v in verdicts:
        claim = v.claim
        reported = " / ".join(f"{claim.label(lv)}: {num(x)}" for lv, x in zip(claim.order, claim.reported) if x is not None)
        ours = []
        for c in v.comparisons:
            k = scale(c.metric)
            unit = " pp" if k == 100 else ""  # a difference of percentages is in points
            interval = ci(c.diff.low, c.diff.high, k) if c.diff.defined else "[CI n/a]"
            ours.append(f"{claim.label(c.a)} vs {claim.label(c.b)} @ epoch {c.epoch} (n={c.n_a}/{c.n_b}): {num(k * c.mean_a)} vs "
                        f"{num(k * c.mean_b)}, diff {num(k * c.diff.value, sign=True)}{unit} {interval}")
        rows.append({"claim": claim.text, "source": claim.source, "statement": claim.statement,
                     "reported": reported or "n/a", "measured": "; ".join(ours) or "n/a",
                     "verdict": v.verdict, "note": v.note})
    return pd.DataFrame(rows, columns=["claim", "source", "statement", "reported", "measured", "verdict", "note"])
