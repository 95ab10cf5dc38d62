"""Claims: the conclusions the reports drew, as chains of factor levels, and verdicts on them.

A claims file (YAML; see README.md here) lists claims such as `stem_kernel: 3 > 7` (3 is better than 7),
`recipe: [a, "~", b, ">", c]` (a about equal to b, both better than c) or `dropout: [0.0, 0.4, 0.8]` (best
first), each with its source, the values the report gave and the statement it drew. Each adjacent pair is
tested with the design-pooled t test at the largest epoch both levels reached (`analysis.comparisons`),
every pair of the file corrected together by Holm, and the claim gets a verdict from `analysis.verdicts`:
supported, reversed, equivalent, not resolved or not tested. A file names what its claims speak about
(`about: {dataset: cifar10, model: resnet18}`): a run on other data gets `not applicable` for every claim.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cnnsearch.yamlio import load_yaml
from search_spaces import BUDGETS, METRICS, TRAIN_KEYS, level_key, level_label

from .comparisons import compare, group_trials, left_out, level_column
from .display import scale
from .inference import ALPHA, DEFAULT_MARGIN, RELATIONS
from .load import Experiment
from .verdicts import (NOT_TESTED, ROW_COLUMNS, ClaimOrder, ClaimVerdict, Judgement, PairVerdict, claim_rows,
                       headline_counts, judge, split_chain)

__all__ = ["Claim", "ClaimSet", "ClaimsError", "Verdict", "ClaimsCheck", "NOT_APPLICABLE", "CSV_COLUMNS",
           "load_claims", "check_claims", "verdicts_table", "default_claims_file", "CLAIMS_DIR"]

CLAIMS_DIR = Path(__file__).resolve().parent / "claims"
NOT_APPLICABLE = "not applicable"  # the file speaks about other data (or another model): no verdicts at all
_CLAIM_KEYS = ("source", "statement", "reported", "where", "id", "margin")
_TOP_KEYS = ("space", "metric", "margin", "about", "claims")
_ABOUT_KEYS = ("dataset", "model", "budget")
# claims.csv: the file's identity and what each verdict rests on, then analysis.verdicts' per-pair columns.
CSV_COLUMNS = ("file", "id", "source", "dataset", "budget", "model", "seeds", "early", *ROW_COLUMNS)


class ClaimsError(ValueError):
    """A claims file that cannot be checked; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Claim:
    """`order` lists level keys joined by `relations` as the file writes them (`>` better than, `<` worse
    than, `~` about equal within `margin` points; None: the file's); `reported` the report's value per
    level (None: not given), in the metric's display units; `where` fixes other factors' levels."""

    factor: str
    order: tuple[str, ...]
    relations: tuple[str, ...] = ()  # default: each level better than the next
    labels: tuple[str, ...] = ()  # the levels as the file writes them, for display
    margin: float | None = None
    source: str = ""
    statement: str = ""
    reported: tuple[float | None, ...] = ()
    where: Mapping[str, str] = field(default_factory=dict)
    where_values: Mapping[str, Any] = field(default_factory=dict)  # as the file writes them
    id: str = ""
    file: str = ""
    index: int = 0

    def __post_init__(self) -> None:
        if not self.relations:
            object.__setattr__(self, "relations", (">",) * (len(self.order) - 1))
        if not self.labels:
            object.__setattr__(self, "labels", self.order)

    @property
    def key(self) -> str:
        """Where the claim sits in its file, for error messages: `claims[2].lr_decay`."""
        return f"claims[{self.index}].{self.factor}"

    def label(self, key: str) -> str:
        """How the claims file writes level `key`."""
        return dict(zip(self.order, self.labels)).get(key, key)

    @property
    def chain(self) -> str:
        return " ".join(x for pair in zip(self.labels, (*self.relations, "")) for x in pair).strip()

    @property
    def text(self) -> str:
        where = f" ({'; '.join(f'{k}: {level_label(v)}' for k, v in self.where_values.items())})" if self.where else ""
        return f"{self.factor}{where}: {self.chain}"


@dataclass(frozen=True)
class ClaimSet:
    """A parsed claims file: the metric its `reported` values are in, the equivalence `margin` (points) of
    its ties, what it speaks `about` (dataset, model, budget) and the claims."""

    claims: tuple[Claim, ...]
    metric: str = "val_acc"
    margin: float = DEFAULT_MARGIN
    about: Mapping[str, Any] = field(default_factory=dict)
    space: str | None = None
    file: str = ""

    def __iter__(self) -> Iterator[Claim]:
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)


@dataclass(frozen=True)
class Verdict:
    """What an experiment says about `claim`: `verdict` (one of analysis.verdicts.VERDICTS, or
    NOT_APPLICABLE), the pairs it rests on (the chain's adjacent pairs, Holm-adjusted), a note saying why
    (what was reversed or not shown, what was left out, that a pair was compared early), and what it rests on:
    the budget, the models its trials trained and the seeds per point (a range when they differ)."""

    claim: Claim
    verdict: str
    pairs: tuple[PairVerdict, ...] = ()
    note: str = ""
    exploratory: bool = False  # some point of the claim has fewer than analysis.verdicts.MIN_SEEDS seeds
    early: bool = False  # some pair compared before its levels' last epoch: not in the headline count
    budget: str = ""
    models: str = ""  # "" when the claim compares models
    seeds: str = ""

    @property
    def context(self) -> str:
        """`budget cpu, model resnet18, 2 seeds`: what the verdict rests on."""
        parts = [f"budget {self.budget}"] if self.budget else []
        parts += [f"model {self.models}"] if self.models else []
        parts += [f"{self.seeds} seed{'s' * (self.seeds != '1')}"] if self.seeds else []
        return ", ".join(parts)

    @property
    def comparisons(self):
        """The pairs' tests (`analysis.inference.PairTest`), in the chain's order."""
        return tuple(p.test for p in self.pairs)


@dataclass(frozen=True)
class ClaimsCheck:
    """The verdicts of a claims file on one experiment. `judgement`: the Holm family (None when the file
    does not apply); `not_applicable`: why the file does not apply ("" when it does)."""

    claims: ClaimSet
    verdicts: tuple[Verdict, ...]
    judgement: Judgement | None
    not_applicable: str = ""
    dataset: str = ""
    budget: str = ""

    def __iter__(self) -> Iterator[Verdict]:
        return iter(self.verdicts)

    def __len__(self) -> int:
        return len(self.verdicts)

    def __getitem__(self, i: int) -> Verdict:
        return self.verdicts[i]

    @property
    def headline(self) -> dict[str, int]:
        """Claims per verdict, early verdicts left out (see analysis.verdicts.headline_counts)."""
        return headline_counts(self.verdicts) if not self.not_applicable else {}

    def rows(self) -> list[dict]:
        """claims.csv: one row per pair (one per claim without pairs), columns CSV_COLUMNS."""
        if self.judgement is None:
            per_claim = [[{"claim": v.claim.text, "pair": v.claim.chain, "verdict": v.verdict,
                           "claim_verdict": v.verdict, "note": v.note}] for v in self.verdicts]
        else:  # claim_rows gives each claim's rows in order: one per pair, one for a claim without pairs
            judged = iter(claim_rows(self.judgement))
            per_claim = [[next(judged) for _ in range(max(1, len(v.pairs)))] for v in self.judgement.claims]
        out = []
        for v, rows in zip(self.verdicts, per_claim):
            for row in rows:
                if v.note and row.get("note") != v.note:  # the claim's notes (left out, early) on each row
                    row = {**row, "note": "; ".join(x for x in (row.get("note"), v.note) if x)}
                out.append({**dict.fromkeys(CSV_COLUMNS), **row, "file": self.claims.file, "id": v.claim.id,
                            "source": v.claim.source, "dataset": self.dataset, "budget": self.budget,
                            "model": v.models or None, "seeds": v.seeds or None,
                            "early": v.early})
        return [{k: row.get(k) for k in CSV_COLUMNS} for row in out]


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
    margin = _margin(data.get("margin", DEFAULT_MARGIN), f"{name}: margin")
    about = _about(data.get("about") or {}, name)
    claims = tuple(_parse_claim(item, i, name) for i, item in enumerate(data["claims"]))
    return ClaimSet(claims=claims, metric=metric, margin=margin, about=about, space=data.get("space"), file=name)


def _margin(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ClaimsError(f"{where}: must be a positive number of points, got {value!r}")
    return float(value)


def _about(about: Any, file: str) -> dict[str, Any]:
    if not isinstance(about, Mapping):
        raise ClaimsError(f"{file}: about: expected a mapping such as {{dataset: cifar10, model: resnet18}}")
    unknown = [str(k) for k in about if k not in _ABOUT_KEYS]
    if unknown:
        raise ClaimsError(f"{file}: about: unknown key {unknown[0]!r}; known: {', '.join(_ABOUT_KEYS)}")
    if "budget" in about and about["budget"] not in BUDGETS:
        raise ClaimsError(f"{file}: about.budget: must be one of {', '.join(BUDGETS)}, got {about['budget']!r}")
    for key in ("dataset", "model"):
        values = about.get(key)
        if values is not None and not (isinstance(values, str) or
                                       (isinstance(values, list) and values and all(isinstance(v, str) for v in values))):
            raise ClaimsError(f"{file}: about.{key}: expected a name or a list of names, got {values!r}")
    return dict(about)


def _parse_claim(item: Any, index: int, file: str) -> Claim:
    where = f"{file}: claims[{index}]"
    if not isinstance(item, Mapping):
        raise ClaimsError(f"{where}: expected a mapping such as {{stem_kernel: 3 > 7, source: E}}")
    factors = [k for k in item if k not in _CLAIM_KEYS]
    if len(factors) != 1:
        raise ClaimsError(f"{where}: give exactly one factor with its levels (besides "
                          f"{', '.join(_CLAIM_KEYS)}), got {', '.join(map(str, factors)) or 'none'}")
    factor = str(factors[0])
    where = f"{where}.{factor}"
    levels, relations = _chain(item[factor], where)
    order = tuple(level_key(v) for v in levels)
    if len(set(order)) != len(order):
        raise ClaimsError(f"{where}: a level appears twice")
    reported = _parse_reported(item.get("reported"), order, where)
    fixed = item.get("where") or {}
    if not isinstance(fixed, Mapping):
        raise ClaimsError(f"{where}: where: expected a mapping of factor: level")
    if factor in fixed:
        raise ClaimsError(f"{where}: where: {factor} is the claim's own factor; a claim compares its levels, "
                          f"so it cannot also fix one")
    margin = _margin(item["margin"], f"{where}: margin") if "margin" in item else None
    return Claim(factor=factor, order=order, relations=relations, labels=tuple(level_label(v) for v in levels),
                 margin=margin, source=str(item.get("source", "")),
                 statement=" ".join(str(item.get("statement", "")).split()), reported=reported,
                 where={str(k): level_key(v) for k, v in fixed.items()},
                 where_values={str(k): v for k, v in fixed.items()}, id=str(item.get("id", "")), file=file, index=index)


def _chain(value: Any, where: str) -> tuple[list, tuple[str, ...]]:
    """The levels and relations of `3 > 7`, `[3, 7]` (best first) or `[a, "~", b, ">", c]`."""
    if isinstance(value, str):
        parts = split_chain(value)
        if len(parts) < 3:
            raise ClaimsError(f"{where}: expected levels joined by >, < or ~ with spaces around them (e.g. "
                              f"'3 > 7'), got {value!r}")
        try:
            levels = [load_yaml(p) for p in parts[0::2]]
        except yaml.YAMLError:
            raise ClaimsError(f"{where}: cannot read the levels of {value!r}") from None
        return levels, tuple(parts[1::2])
    if not isinstance(value, list) or len(value) < 2:
        raise ClaimsError(f"{where}: expected two or more levels: a list, best first, or 'a > b ~ c'")
    tokens = [isinstance(v, str) and v in RELATIONS for v in value]
    if not any(tokens):
        return value, (">",) * (len(value) - 1)
    if len(value) % 2 == 0 or tokens[0::2] != [False] * len(value[0::2]) or not all(tokens[1::2]):
        raise ClaimsError(f"{where}: a list with relations must alternate level, relation, level "
                          f"(e.g. [a, '~', b, '>', c]), got {value!r}")
    return value[0::2], tuple(value[1::2])


def _parse_reported(reported: Any, order: tuple[str, ...], where: str) -> tuple[float | None, ...]:
    if reported is None:
        return (None,) * len(order)
    if isinstance(reported, list):
        if len(reported) != len(order):
            raise ClaimsError(f"{where}: reported: a list needs one value per level ({len(order)}), got {len(reported)}")
        values = reported
    elif isinstance(reported, Mapping):
        by_key = {level_key(k): v for k, v in reported.items()}
        extra = [k for k in by_key if k not in order]
        if extra:
            raise ClaimsError(f"{where}: reported: level(s) {', '.join(extra)} are not in the claim's order")
        values = [by_key.get(k) for k in order]
    else:
        raise ClaimsError(f"{where}: reported: expected a list (one value per level) or a mapping level: value")
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ClaimsError(f"{where}: reported: values must be numbers or null, got {v!r}")
    return tuple(None if v is None else float(v) for v in values)


# ---------------------------------------------------------------------------------- applicability
def _not_applicable(claims: ClaimSet, experiment: Experiment) -> str:
    """Why the file's claims do not apply to this experiment's data (or model), "" when they do."""
    def names(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else list(value)

    about = claims.about
    if "dataset" in about and experiment.dataset not in names(about["dataset"]):
        return (f"{claims.file} speaks about {' or '.join(names(about['dataset']))}; this run trained on "
                f"{experiment.dataset}")
    models = sorted(set(experiment.trials.get("config/model", pd.Series(dtype=str)).dropna().astype(str)))
    if "model" in about and models and not set(models) & set(names(about["model"])):
        return f"{claims.file} speaks about {' or '.join(names(about['model']))}; this run trained {', '.join(models)}"
    return ""


# ------------------------------------------------------------------------------------- validation
def _known_factor(claim: Claim, experiment: Experiment) -> bool:
    """A TrainConfig key, a factor of the experiment, or a multi-key factor (levels set TrainConfig keys)."""
    if claim.factor in TRAIN_KEYS or experiment.factor(claim.factor) is not None:
        return True
    return all(all(part.split("=", 1)[0] in TRAIN_KEYS for part in key.split(",")) and "=" in key
               for key in claim.order)


def _levels_present(experiment: Experiment, name: str) -> list[str]:
    """The level keys of `name` (a factor, or a key a multi-key factor sets) among the trials, in the
    space's order."""
    column, owner = level_column(experiment, name)
    spec = experiment.factor(owner)
    if column == name:
        known = list(spec.by_key())
    else:  # the values the owning factor's levels give the key
        known = list(dict.fromkeys(level_key(level[name]) for level in spec.values if name in level))
    return known


def _untested(claim: Claim, experiment: Experiment) -> str | None:
    """Why the experiment cannot test `claim` (a note), None if it can; raises ClaimsError for a claim
    that names an unknown factor or a level the experiment does not have."""
    if not _known_factor(claim, experiment):
        known = ", ".join(f.name for f in experiment.factors)
        raise ClaimsError(f"{claim.file}: {claim.key}: unknown factor {claim.factor!r} (the experiment's factors: "
                          f"{known or 'none'}; or any TrainConfig key)")
    found = level_column(experiment, claim.factor)
    if found is None or found[1] not in experiment.varied():
        return f"the experiment does not vary {claim.factor}"
    owner = experiment.factor(found[1])
    if owner.continuous:
        return f"{claim.factor} was drawn from a continuous distribution, not run at levels"
    levels = _levels_present(experiment, claim.factor)
    for level in claim.order:
        if level not in levels:
            raise ClaimsError(f"{claim.file}: {claim.key}: level {claim.label(level)} is not in the experiment "
                              f"(levels: {', '.join(levels)})")
    for name, level in claim.where.items():
        other = level_column(experiment, name)
        if other is None:  # not varied here: the restriction holds if the base config agrees with it
            note = _where_on_base(claim, name, experiment)
            if note:
                return note
            continue
        if other[1] == found[1]:
            raise ClaimsError(f"{claim.file}: {claim.key}: where: {name} is set by {found[1]}, the factor the claim "
                              f"compares; a claim cannot also fix it")
        other_levels = _levels_present(experiment, name)
        if level not in other_levels:
            raise ClaimsError(f"{claim.file}: {claim.key}: where: {name}: level {level} is not in the experiment "
                              f"(levels: {', '.join(other_levels)})")
    return None


def _where_on_base(claim: Claim, name: str, experiment: Experiment) -> str | None:
    """A `where` entry on a factor the experiment does not vary: a TrainConfig key (or a mapping of
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


# --------------------------------------------------------------------------------------- verdicts
def check_claims(experiment: Experiment, claims: ClaimSet, *, alpha: float = ALPHA) -> ClaimsCheck:
    """Verdicts on every claim of `claims`, Holm-corrected over all their pairs at family-wise `alpha`.
    Validates every claim first (ClaimsError for unknown factors or levels, or a `where` on the claim's own
    factor); a file about other data gets `not applicable` for every claim."""
    metric = claims.metric
    dataset, budget = experiment.dataset, experiment.record.budget
    reason = _not_applicable(claims, experiment)
    if reason:
        verdicts = tuple(Verdict(c, NOT_APPLICABLE, note=reason) for c in claims)
        return ClaimsCheck(claims, verdicts, None, reason, dataset, budget)
    untested = [_untested(claim, experiment) for claim in claims]  # every error before any work
    # A claims file's `>` means better: for a metric where lower is better, that is `<` on the values.
    flip = {">": "<", "<": ">", "~": "~"} if experiment.record.mode_of(metric) == "min" else None
    items, orders = [], []
    for claim, note in zip(claims, untested):
        margin = claim.margin if claim.margin is not None else claims.margin
        relations = tuple(flip[r] for r in claim.relations) if flip else claim.relations
        order = ClaimOrder(claim.text, claim.labels, relations, margin)
        orders.append(order)
        if note is not None:
            items.append((order, note))
            continue
        where = {k: v for k, v in claim.where.items() if level_column(experiment, k) is not None}
        tests = []
        for (a, b), relation in zip(zip(claim.order, claim.order[1:]), relations):
            t = compare(experiment, claim.factor, a, b, relation=relation, where=where, metric=metric, margin=margin,
                        alpha=alpha)
            tests.append(dataclasses.replace(t, a=claim.label(a), b=claim.label(b)))
        items.append((order, tests))
    judgement = judge(items, alpha=alpha)
    verdicts = tuple(_verdict(claim, judged, experiment) for claim, judged in zip(claims, judgement.claims))
    return ClaimsCheck(claims, verdicts, judgement, "", dataset, budget)


def _verdict(claim: Claim, judged: ClaimVerdict, experiment: Experiment) -> Verdict:
    """The claim's verdict with what it rests on (budget, model, seeds) and its notes."""
    if judged.verdict == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, note=judged.reason, budget=experiment.record.budget)
    where = {k: v for k, v in claim.where.items() if level_column(experiment, k) is not None}
    groups = [group_trials(experiment, claim.factor, level, where=where) for level in claim.order]
    notes = [judged.note]
    dropped = pd.concat([group_trials(experiment, claim.factor, level, where=where, trials=left_out(experiment))
                         for level in claim.order])
    if len(dropped):
        notes.append("left out (crashed or unfinished): " + ", ".join(
            f"{r.label} seed {r.seed} ({r.status} after {r.epochs} of {r.max_epochs} epochs)"
            for r in dropped.itertuples()))
    early = sorted({p.test.epoch for p in judged.pairs if not p.test.final and p.test.epoch is not None})
    if early:
        entry = experiment.record.scheduler_entry
        notes.append(f"compared at epoch {', '.join(map(str, early))} of {experiment.max_epochs}, where {entry.title} "
                     f"stopped trials of these levels: an order can still change, so not in the headline count")
    models = sorted(set(pd.concat(groups).get("config/model", pd.Series(dtype=str)).dropna().astype(str)))
    seeds = sorted({p.test.seeds for p in judged.pairs})
    return Verdict(claim, judged.verdict, judged.pairs, "; ".join(n for n in notes if n), judged.exploratory,
                   judged.early, budget=experiment.record.budget,
                   models="/".join(models) if claim.factor != "model" else "",
                   seeds=f"{seeds[0]}" + (f"-{seeds[-1]}" if len(seeds) > 1 else ""))


# ---------------------------------------------------------------------------------------- display
def verdicts_table(check: ClaimsCheck) -> pd.DataFrame:
    """One row per claim, for display: the claim, its source, the report's values, ours (per adjacent pair:
    the means at the compared epoch, the difference with its interval, raw and Holm-adjusted p), the verdict
    with what it rests on, and the note."""
    k = scale(check.claims.metric)
    rows = []
    for v in check:
        claim = v.claim
        reported = " / ".join(f"{claim.label(lv)}: {x:g}" for lv, x in zip(claim.order, claim.reported) if x is not None)
        ours = [_pair_text(p, k) for p in v.pairs]
        verdict = v.verdict + (" (exploratory)" if v.exploratory else "") + (" (early)" if v.early else "")
        rows.append({"claim": claim.text, "source": claim.source, "statement": claim.statement,
                     "reported": reported or "n/a", "measured": "; ".join(ours) or "n/a", "verdict": verdict,
                     "context": v.context, "note": v.note})
    return pd.DataFrame(rows, columns=["claim", "source", "statement", "reported", "measured", "verdict", "context",
                                       "note"])


def _pair_text(pair: PairVerdict, k: float) -> str:
    t = pair.test
    unit = " pts" if k == 100 else ""
    head = f"{t.text} @ epoch {t.epoch if t.epoch is not None else 'n/a'} (n={t.n_a}/{t.n_b})"
    if not t.defined:
        return f"{head}: {t.note}"
    interval = f"{t.confidence:.0%} CI [{t.low:+.2f}, {t.high:+.2f}]"
    return (f"{head}: {t.mean_a:.2f} vs {t.mean_b:.2f}, diff {t.diff:+.2f}{unit} {interval}, "
            f"p {t.p:.2g}, adj. {pair.p_adjusted:.2g} → {pair.verdict}")

