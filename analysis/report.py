"""`report.md` for an experiment: claims and verdicts first, the seed noise and what the run can detect, then a
section per factor with its figures, the learning-curve, scheduler, best-trial and importance sections, and
the cost. Beside it: figures/*.png, trials.csv, epochs.csv and (with a claims file) claims.csv."""
from __future__ import annotations

import csv
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .best import evaluate_best
from .claims import (NOT_APPLICABLE, ClaimsCheck, ClaimSet, check_claims, default_claims_file, load_claims,
                     verdicts_table)
from .comparisons import design_values, left_out, level_effects, usable_trials
from .costs import cost
from .curves import critical_epochs
from .display import changes, dataset_name, num, scale
from .figures import (plot_asha_rungs, plot_importance, plot_level_curves, plot_level_effects, plot_looks,
                      plot_overfitting)
from .inference import pool_sd
from .load import Experiment
from .power import POWER, detectable_effect, seeds_needed
from .verdicts import MIN_SEEDS, VERDICTS

__all__ = ["write_report", "TARGET_EFFECT"]

TARGET_EFFECT = 2.0  # points: the smallest effect the claims spaces are sized to find (issue 11)


def write_report(experiment: Experiment, out: str | Path, *, claims: ClaimSet | str | Path | None = None,
                 test: bool = True, data_dir: str | None = None, download: bool = True) -> Path:
    """Write the report of `experiment` into folder `out` and return the path of report.md.

    claims: a ClaimSet, a claims file, or None for `analysis/claims/<space name>.yaml` when it exists.
    test: evaluate the best trial on the test split (confusion matrix); needs the data set.
    Raises ClaimsError for a claims file that does not fit the experiment, DataError for missing data."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    claim_set = _claims(experiment, claims)
    checked = check_claims(experiment, claim_set) if claim_set is not None else None

    experiment.trials.to_csv(out / "trials.csv", index=False)
    experiment.epochs.to_csv(out / "epochs.csv", index=False)
    if checked is not None:
        _write_csv(out / "claims.csv", checked.rows())

    record = experiment.record
    lines = [f"# `{record.space}` on {dataset_name(experiment.dataset)} (budget {record.budget or '?'}, "
             f"{record.scheduler_entry.title})", "",
             _summary(experiment), ""]
    lines += _adaptive_section(experiment, figures)
    lines += _claims_section(checked, claim_set, experiment)
    lines += _noise_section(experiment, checked)
    for factor in experiment.varied():
        if experiment.factor(factor).continuous:
            continue
        table = level_effects(experiment, factor)
        if not len(table):
            continue
        stem = _file_stem(factor)
        plot_level_curves(experiment, factor, figures / f"curves_{stem}.png")
        labels = experiment.factor(factor).level_labels()
        table = table.assign(level=table["level"].map(lambda k: labels.get(k, k)),
                             reference=table["reference"].map(lambda k: labels.get(k, k)))
        plot_level_effects(table, figures / f"levels_{stem}.png", metric=experiment.metric)
        verdicts = [v for v in (checked or ()) if v.claim.factor == factor]
        lines += _factor_section(factor, table, verdicts, experiment.metric, stem)
    lines += _overfitting_section(experiment, figures)
    lines += _scheduler_section(experiment, figures)
    lines += _best_section(experiment, figures, test=test, data_dir=data_dir, download=download)
    lines += _importance_section(experiment, figures)
    lines += _cost_section(experiment)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _claims(experiment: Experiment, claims) -> ClaimSet | None:
    if isinstance(claims, ClaimSet):
        return claims
    if claims is not None:
        return load_claims(claims)
    default = default_claims_file(experiment.record.space)
    return load_claims(default) if default is not None else None


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["claim"])
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------- markdown
def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def _md_table(frame: pd.DataFrame) -> list[str]:
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return [header, rule, *("| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False))]


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _summary(experiment: Experiment) -> str:
    record = experiment.record
    seeds = ", ".join(map(str, record.seeds))
    if record.base_seeds:
        seeds += f" (base point: {', '.join(map(str, record.base_seeds))})"
    text = (f"{record.description or 'No description'} (space `{record.space}`, {record.source or 'no source'}). "
            f"Design {experiment.design}, budget {record.budget}, {len(experiment.trials)} trials loaded of "
            f"{_known(record.num_trials)}, seeds {seeds}, up to {experiment.max_epochs} epochs, "
            f"{record.scheduler_entry.summary(record.settings)}, search {record.search}, data {experiment.dataset}, "
            f"metric {experiment.metric} ({experiment.mode}). Run: `{_known(record.command)}` ({_known(record.created)}); "
            f"folder `{experiment.path}`. Report written {time.strftime('%Y-%m-%d %H:%M')}.")
    if experiment.skipped:
        text += "\n\nSkipped (unreadable) trial folders: " + "; ".join(f"`{s}`" for s in experiment.skipped) + "."
    dropped = left_out(experiment)
    if len(dropped):
        text += ("\n\nLeft out of every comparison, pool and importance (crashed or unfinished): " +
                 "; ".join(f"`{r.label}` seed {r.seed} ({r.status} after {r.epochs} of {r.max_epochs} epochs)"
                           for r in dropped.itertuples()) + ". The other trials are compared as if these had not run.")
    return text


def _adaptive_section(experiment: Experiment, figures: Path) -> list[str]:
    """With --until-decided: the looks the runner took at the claims (its ledger), wave by wave."""
    from search_spaces import Ledger, RecordError

    try:
        looks = Ledger.read(experiment.filesystem, experiment.root).looks if experiment.filesystem else []
    except RecordError:
        looks = []
    if not looks:
        return []
    plot_looks(looks, figures / "looks.png")
    claims = list(dict.fromkeys(r["claim"] for look in looks for r in look["rows"]))
    table = pd.DataFrame({"claim": claims, **{
        f"look {look['wave']} (level {look['level']:.4f})": [
            next((f"{r['state']}, {r['verdict']}" for r in look["rows"] if r["claim"] == c), "") for c in claims]
        for look in looks}})
    last = looks[-1]
    return ["## Adaptive replication", "",
            f"This study added seeds wave by wave (`--until-decided`): after each wave the claims were judged at that "
            f"look's own level (alpha spending over the looks, so the chance of any false call in the study stays at "
            f"most 5%; analysis/sequential.py), and only the points of undecided claims got more seeds. These are the "
            f"study's verdicts; the sections below pool every seed at the full level, which repeated looks do not "
            f"allow, so read them as description. It stopped after look {last['wave']}: "
            f"{last['stop'] or 'interrupted before its next look'}.", ""] + _md_table(table) + [
            "", "![each claim pair's interval at each look](figures/looks.png)", ""]


def _claims_section(checked: ClaimsCheck | None, claim_set: ClaimSet | None, experiment: Experiment) -> list[str]:
    lines = ["## Claims", ""]
    if claim_set is None:
        return lines + [f"No claims file for space `{experiment.record.space}` "
                        "(pass `--claims FILE`; see analysis/README.md).", ""]
    if not len(checked):
        return lines + [f"`{claim_set.file}` holds no claims.", ""]
    about = ", ".join(f"{k} {v if isinstance(v, str) else ' or '.join(v)}" for k, v in claim_set.about.items())
    if checked.not_applicable:
        shown = pd.DataFrame({"claim": [f"**{v.claim.text}** ({v.claim.source}): {v.claim.statement}" for v in checked],
                              "verdict": [f"**{NOT_APPLICABLE}**" for _ in checked]})
        return lines + [f"**Not applicable**: {checked.not_applicable}. The claims below were not judged; pass "
                        f"`--claims FILE` with claims about this data.", ""] + _md_table(shown) + [""]
    metric = claim_set.metric
    unit = "%" if scale(metric) == 100 else ""
    table = verdicts_table(checked)
    shown = pd.DataFrame({
        "claim": [f"**{r.claim}** ({r.source}): {r.statement}" for r in table.itertuples()],
        f"report's value ({metric}{', ' + unit if unit else ''})": table["reported"],
        "ours: pair @ epoch (n): means, diff [CI], p, Holm-adjusted p": table["measured"].str.replace("; ", "<br>"),
        "verdict": [f"**{v.verdict}**<br>{v.context}" + ("; exploratory" if v.exploratory else "") +
                    ("; early" if v.early else "") + (f"<br>{v.note}" if v.note else "") for v in checked],
    })
    counts = checked.headline
    early = sum(v.early for v in checked)
    judgement = checked.judgement
    seeds = sorted({p.test.seeds for v in checked for p in v.pairs})
    lines += [f"Claims from `{claim_set.file}`" + (f", about {about}" if about else "") +
              f"; this run: budget {experiment.record.budget}, data {experiment.dataset}." +
              (f" The claims were made at budget {claim_set.about['budget']}: at another budget this is a scaled-down "
               f"check, so compare orderings, not levels." if claim_set.about.get("budget") not in
               (None, experiment.record.budget) else ""), ""]
    lines += ["**Headline** (claims judged at the last epoch of their levels): " +
              ", ".join(f"{counts[v]} {v}" for v in VERDICTS) +
              (f"; {early} more compared early (before a level's last epoch) are not counted" if early else "") + "." +
              (f" **Exploratory**: {seeds[0]} seed{'s' * (seeds[0] != 1)} on some point of a claim (fewer than "
               f"{MIN_SEEDS} cannot check the equal-noise assumption the intervals rest on)." if seeds and
               seeds[0] < MIN_SEEDS else ""), ""]
    lines += _md_table(shown) + [""]
    lines += [f"How: each adjacent pair of a claim is compared at the largest epoch every trial of both levels reached, "
              f"with a t test whose seed noise is pooled over every design point at that epoch "
              f"({_pools(checked)}). {judgement.text[0].upper() + judgement.text[1:]}: a pair is called only when its "
              f"adjusted p is at most {judgement.alpha:g}, so the chance of any false call in the file is at most "
              f"{judgement.alpha:.0%}. `a > b`: `supported` when the 95% interval of a - b lies above 0, `reversed` when "
              f"below; `a ~ b`: `equivalent` when the 90% interval lies inside +-margin ({claim_set.margin:g} points "
              f"unless the claim sets one); otherwise `not resolved`. Calibration: analysis/verdicts.py. The reports' "
              f"values are single runs of the full recipe; ours come from this run's budget. Every pair is in "
              f"`claims.csv`.", ""]
    return lines


def _pools(checked: ClaimsCheck) -> str:
    """The pooled sd and df of each epoch the pairs were compared at."""
    pools = sorted({(p.test.epoch, p.test.sd, p.test.df) for v in checked for p in v.pairs
                    if p.test.epoch is not None and p.test.df > 0})
    if not pools:
        return "no pool: one seed everywhere"
    return "; ".join(f"epoch {e}: sd {sd:.2f} points, df {df}" for e, sd, df in pools)


def _noise_section(experiment: Experiment, checked: ClaimsCheck | None) -> list[str]:
    """The seed noise at the last epoch where it can be measured, and the smallest difference this design (its
    points and seeds) finds there with 80% power, corrected as the claims file is."""
    lines = ["## Seed noise and what this run can detect", ""]
    pooled, epoch = None, experiment.max_epochs
    for epoch in range(experiment.max_epochs, 0, -1):  # under ASHA the last epochs may hold one seed per point
        pooled = pool_sd(design_values(experiment, epoch))
        if pooled.defined:
            break
    if pooled is None or not pooled.defined:
        return lines + ["No estimate of seed noise: no design point has two seeds that reached the same epoch. Run "
                        "two or more seeds (`seeds:` in the space).", ""]
    record = experiment.record
    points = len(record.points) if record.points else experiment.trials["label"].nunique()
    seeds = len(record.seeds)
    base = len(record.base_seeds) or seeds  # a one-at-a-time base point may run more seeds
    family = checked.judgement.family if checked is not None and checked.judgement is not None else 0
    family = max(1, family)
    unit = "points" if scale(experiment.metric) == 100 else experiment.metric
    text = (f"Seed sd pooled over the {pooled.points} design points with values at epoch {epoch}" +
            (f" (the last epoch with two seeds at a point; the run goes to {experiment.max_epochs})"
             if epoch < experiment.max_epochs else "") + f": **{pooled.sd:.2f} {unit}** (df {pooled.df}).")
    if points >= 2 and seeds >= 2:
        mde = detectable_effect(pooled.sd, points=points, seeds=seeds, base_seeds=base, family=family)
        try:
            needed = seeds_needed(TARGET_EFFECT, pooled.sd, points=points, base_extra=base - seeds, family=family)
            need = (f"{needed} seeds per point" + (f" ({needed + base - seeds} on the base)" if base > seeds else "")
                    + f" would find {TARGET_EFFECT:g} {unit}")
        except ValueError:
            need = f"no practical seed count finds {TARGET_EFFECT:g} {unit}"
        corrected = f" after Holm over the claims file's {family} tests" if family > 1 else ""
        text += (f" With {points} design points x {seeds} seeds" + (f" ({base} on the base point)" if base > seeds else "")
                 + ", a difference between two points is found with "
                 f"{POWER:.0%} power{corrected} when it is at least **{mde:.1f} {unit}**; {need}.")
    if pooled.noisy:
        text += (f" Seed spread at {', '.join(pooled.noisy)} is far above the other points' (F test): the pool may "
                 "understate their noise.")
    diverged = usable_trials(experiment).query("status == 'diverged'")
    if len(diverged):
        text += (f" {len(diverged)} diverged trial(s) ({', '.join(diverged['label'])}) are in the pool with their "
                 "last values: they inflate the sd, so fewer pairs are resolved.")
    return lines + [text, ""]


def _factor_section(factor: str, table: pd.DataFrame, verdicts, metric: str, stem: str) -> list[str]:
    unit = "%" if scale(metric) == 100 else ""
    reference = table["reference"].iloc[0]
    shown = pd.DataFrame({
        "level": table["level"],
        "compared at epoch": [f"{e}" + ("" if final else " (early)") for e, final in zip(table["epoch"], table["final"])],
        f"trials (level / {reference})": [f"{n} / {nr}" for n, nr in zip(table["n"], table["n_reference"])],
        f"mean {metric}{' (' + unit + ')' if unit else ''}": [num(m) for m in table["mean"]],
        f"mean of {reference}": [num(m) for m in table["reference_mean"]],
        f"diff vs {reference} [95% CI]": [f"{num(d, sign=True)} [{num(lo, sign=True)}, {num(hi, sign=True)}]"
                                          for d, lo, hi in zip(table["diff"], table["low"], table["high"])],
        "p": [f"{p:.2g}" if pd.notna(p) else "n/a" for p in table["p"]],
    })
    lines = [f"## Factor: {factor}", "",
             f"Each row compares a level with {reference} at the epoch the test used (the largest both reached), both "
             f"means at that epoch; intervals and p from the design-pooled t test, not corrected for multiplicity "
             f"(the claims above are).", ""]
    lines += _md_table(shown) + [""]
    for v in verdicts:
        lines += [f"Claim {v.claim.text} ({v.claim.source}): **{v.verdict}** ({v.context})" +
                  (f"; {v.note}" if v.note else "") + ".", ""]
    lines += [f"![learning curves per level of {factor}](figures/curves_{stem}.png)", "",
              f"![{factor}: each level minus {reference}, at the compared epoch](figures/levels_{stem}.png)", ""]
    return lines


def _overfitting_section(experiment: Experiment, figures: Path) -> list[str]:
    table = critical_epochs(experiment)
    plot_overfitting(experiment, figures / "overfitting.png")
    shown = pd.DataFrame({
        "point": table["label"], "trials": table["trials"], "epochs": table["epochs"],
        "critical epoch": [("n/a (still falling)" if pd.isna(c) else int(c)) for c in table["critical_epoch"]],
        "min val loss": [num(v, 3) for v in table["min_val_loss"]],
        "last val loss": [num(v, 3) for v in table["last_val_loss"]],
        "last train loss": [num(v, 3) for v in table["last_train_loss"]],
    })
    return (["## Over-fitting: the critical epoch", "",
             "The epoch after which the mean validation loss rises (report A's \"critical epoch\"); n/a while it is "
             "still falling when the trials stop.", ""] + _md_table(shown) +
            ["", "![train against val loss](figures/overfitting.png)", ""])


def _scheduler_section(experiment: Experiment, figures: Path) -> list[str]:
    plot_asha_rungs(experiment, figures / "asha_rungs.png")
    record = experiment.record
    entry, rungs = record.scheduler_entry, record.rungs
    text = (f"{entry.title} decided at epochs {', '.join(map(str, rungs))}: a pair with a level stopped there is "
            f"compared at that epoch and kept out of the headline count." if rungs else
            f"Scheduler {record.scheduler}: it stops no trial (a trial that ended early crashed)." if not entry.stops_early else
            f"{entry.title} had no rung below the last epoch.")
    return ["## Trials alive per epoch", "", text, "", "![trials alive per epoch](figures/asha_rungs.png)", ""]


def _best_section(experiment: Experiment, figures: Path, *, test: bool, data_dir, download: bool) -> list[str]:
    from cnnsearch.plots import plot_confusion, plot_curves

    from .best import best_trial, config_changes

    metric = experiment.metric
    row = best_trial(experiment)
    history = experiment.epochs[experiment.epochs["trial_id"] == row["trial_id"]].to_dict("records")
    plot_curves(history, figures / "best_curves.png", title=f"best trial: {row['label']} seed {row['seed']}")
    differs = config_changes(experiment, experiment.configs[row["trial_id"]])
    lines = ["## Best trial", "",
             f"`{row['label']}` seed {row['seed']} (folder `{row['folder']}`): best {metric} "
             f"{num(row[f'best_{metric}'], 4)} at epoch {row['best_epoch']} of {row['epochs']} trained "
             f"({row['status']}). Differs from the base in: {changes(differs)}.", "",
             "![best trial's learning curves](figures/best_curves.png)", ""]
    if not test:
        return lines + ["Test split not evaluated (`--no-test`): no confusion matrix.", ""]
    try:
        best = evaluate_best(experiment, trial_id=row["trial_id"], data_dir=data_dir, download=download)
    except ValueError as exc:  # its checkpoint is unreadable or refused: the rest of the report still stands
        print(f"warning: {exc}", file=sys.stderr)
        return lines + [f"Test split not evaluated: {exc}.", ""]
    plot_confusion(best.test.confusion, best.classes, figures / "confusion.png",
                   title=f"best trial on the test split: accuracy {100 * best.test.accuracy:.2f}%")
    n = int(best.test.confusion.sum())
    return lines + [f"Test split ({n:,} images), model {best.model_from}: accuracy "
                    f"**{100 * best.test.accuracy:.2f}%**, loss {best.test.loss:.4f}. Evaluated once; the test split "
                    "chose nothing.", "", "![confusion matrix on the test split](figures/confusion.png)", ""]


def _known(value: Any) -> str:
    """What the record says, or ? where an old one does not say."""
    return "?" if value is None else str(value)


def _importance_section(experiment: Experiment, figures: Path) -> list[str]:
    if experiment.design == "one_at_a_time":
        return []
    from .importance import importance_with_floor, permutations_for

    lines = ["## Parameter importance", ""]
    try:
        epoch, table = importance_with_floor(experiment)
    except ImportError as exc:
        return lines + [f"Not computed: Optuna's fANOVA needs scikit-learn ({exc}); `pip install scikit-learn`.", ""]
    except (ValueError, RuntimeError) as exc:
        return lines + [f"Not computed: {str(exc).splitlines()[0]}.", ""]
    plot_importance(table, figures / "importance.png",
                    title=f"fANOVA importance of {experiment.metric} at epoch {epoch}")
    shown = pd.DataFrame({"factor": table["factor"], "importance": [f"{v:.3f}" for v in table["importance"]],
                          "noise floor (95%)": [f"{v:.3f}" for v in table["floor"]],
                          "permutation p": [f"{v:.3f}" for v in table["p"]],
                          "Holm-adjusted p": [f"{v:.3f}" for v in table["p_adjusted"]],
                          "matters": ["**yes**" if m else "no" for m in table["matters"]]})
    matters = table.loc[table["matters"], "factor"].tolist()
    at = f" of {experiment.max_epochs}, the last epoch every trial reached" if epoch < experiment.max_epochs else ""
    return lines + [
        f"Optuna's fANOVA on {experiment.metric} at epoch {epoch}{at}. Its importances sum to 1 even on noise, so "
        f"each is tested against the same importance with the metric shuffled over the trials "
        f"({permutations_for(len(table))} shuffles): the floor is the 95% quantile of those, the permutation p how "
        f"often a shuffle did as well; a factor matters when its Holm-adjusted p over the {len(table)} factors is at "
        f"most 0.05. Matter: {', '.join(matters) if matters else 'none'}.", ""] + _md_table(shown) + [
        "", "![parameter importance](figures/importance.png)", ""]


def _cost_section(experiment: Experiment) -> list[str]:
    c = cost(experiment)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(c["by_status"].items()))
    lines = ["## Cost", "",
             f"- Trials: {c['trials']} ({statuses})" + (f"; {c['skipped']} skipped as unreadable" if c["skipped"] else "") + ".",
             f"- Epochs trained: {c['epochs_trained']} of {c['epochs_planned']} if every trial ran to its end.",
             f"- Wall time summed over trials: {c['trial_hours']:.3f} h; device time: {c['device_hours']:.3f} "
             f"{c['device_unit']} ({c['device_per_trial']:g} per trial)."]
    entry = experiment.record.scheduler_entry
    if entry.stops_early:
        lines.append(f"- {entry.title}'s saving: {c['stopped_early']} trials stopped early, {c['saved_epochs']} epochs not run "
                     f"({c['saved_fraction']:.0%} of the full budget), about {c['saved_device_hours']:.3f} "
                     f"{c['device_unit']} at each stopped trial's own time per epoch.")
    else:
        lines.append(f"- Scheduler {c['scheduler']}: no early stopping, so no saving.")
    return lines + [""]
