"""`report.md` for an experiment: claims and verdicts first, then a section per factor with its
figures, the learning-curve, ASHA, best-trial and importance figures, and the cost. Beside it:
figures/*.png, trials.csv and epochs.csv."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .best import evaluate_best
from .claims import ClaimSet, check_claims, default_claims_file, early_epochs, load_claims, verdicts_table
from .comparisons import level_effects
from .costs import cost
from .curves import critical_epochs
from .display import changes, ci, num, scale
from .figures import plot_asha_rungs, plot_importance, plot_level_curves, plot_level_effects, plot_overfitting
from .load import Experiment
from .stats import CONFIDENCE, N_RESAMPLES

__all__ = ["write_report"]

FEW_SEEDS = 5  # below this many trials per group the bootstrap interval is coarse and tends to be narrow


def write_report(experiment: Experiment, out: str | Path, *, claims: ClaimSet | str | Path | None = None,
                 test: bool = True, data_dir: str | None = None, download: bool = True,
                 n_resamples: int = N_RESAMPLES) -> Path:
    """Write the report of `experiment` into folder `out` and return the path of report.md.

    claims: a ClaimSet, a claims file, or None for `analysis/claims/<space name>.yaml` when it exists.
    test: evaluate the best trial on the test split (confusion matrix); needs the data set.
    Raises ClaimsError for a claims file that does not fit the experiment, DataError for missing data."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    metric = experiment.metric
    claim_set = _claims(experiment, claims)
    verdicts = check_claims(experiment, claim_set, n_resamples=n_resamples) if claim_set is not None else []

    experiment.trials.to_csv(out / "trials.csv", index=False)
    experiment.epochs.to_csv(out / "epochs.csv", index=False)

    lines = [f"# {experiment.name}: {experiment.record.description or experiment.record.space}", "",
             _summary(experiment), ""]
    lines += _claims_section(verdicts, claim_set, experiment, n_resamples)
    smallest = None
    for factor in experiment.varied():
        spec = experiment.factor(factor)
        if spec.continuous:
            continue
        table = level_effects(experiment, factor, n_resamples=n_resamples)
        if not len(table):
            continue
        smallest = min(smallest or 10**9, int(table["n"].min()))
        stem = _file_stem(factor)
        plot_level_curves(experiment, factor, figures / f"curves_{stem}.png")
        labels = spec.level_labels()
        table = table.assign(level=table["level"].map(lambda k: labels.get(k, k)),
                             reference=table["reference"].map(lambda k: labels.get(k, k)))
        plot_level_effects(table, figures / f"levels_{stem}.png", metric=metric)
        lines += _factor_section(factor, table, [v for v in verdicts if v.claim.factor == factor], metric, stem)
    if smallest is not None and smallest < FEW_SEEDS:
        lines += [f"_With {smallest} trial(s) in the smallest group, the bootstrap has few distinct resamples: its "
                  f"intervals are coarse and tend to be too narrow. Run {FEW_SEEDS} or more seeds before trusting a "
                  "`reproduced`._", ""]
    lines += _overfitting_section(experiment, figures)
    lines += _asha_section(experiment, figures)
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
    text = (f"Space `{record.space}` ({record.source or 'no source'}), design {experiment.design}, budget "
            f"{record.budget}, {len(experiment.trials)} trials loaded of {_known(record.num_trials)}, "
            f"seeds {seeds}, up to {experiment.max_epochs} epochs, {record.scheduler_entry.summary(record.settings)}, "
            f"search {record.search}, data {experiment.dataset}, metric {experiment.metric} ({experiment.mode}). "
            f"Run: `{_known(record.command)}` ({_known(record.created)}); folder `{experiment.path}`. "
            f"Report written {time.strftime('%Y-%m-%d %H:%M')}.")
    if experiment.skipped:
        text += "\n\nSkipped (unreadable) trial folders: " + "; ".join(f"`{s}`" for s in experiment.skipped) + "."
    return text


def _claims_section(verdicts, claim_set: ClaimSet | None, experiment: Experiment, n_resamples: int) -> list[str]:
    lines = ["## Claims", ""]
    if claim_set is None:
        return lines + [f"No claims file for space `{experiment.record.space}` "
                        "(pass `--claims FILE`; see analysis/README.md).", ""]
    if not verdicts:
        return lines + [f"`{claim_set.file}` holds no claims.", ""]
    table = verdicts_table(verdicts)
    unit = "%" if scale(claim_set.metric) == 100 else ""
    shown = pd.DataFrame({
        "claim": [f"**{r.claim}** ({r.source}): {r.statement}" for r in table.itertuples()],
        f"report's value ({claim_set.metric}{', ' + unit if unit else ''})": table["reported"],
        f"our value (mean, diff with {CONFIDENCE:.0%} CI)": table["measured"].str.replace("; ", "<br>", regex=False),
        "verdict": [f"**{v}**" + (f"<br>{n}" if n else "") for v, n in zip(table["verdict"], table["note"])],
    })
    counts = table["verdict"].value_counts()
    early = sum(1 for v in verdicts if early_epochs(v, experiment.max_epochs))
    lines += _md_table(shown) + [""]
    lines += [f"From `{claim_set.file}`: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in
                                                         ("reproduced", "contradicted", "inconclusive", "not tested"))
              + (f"; {early} judged before the last epoch, where an order can still change (see the notes)"
                 if early else "") + ".",
              "",
              f"Each adjacent pair of a claimed order is compared at the largest epoch every trial of both levels "
              f"reached (ASHA stops weak trials early, so last values are not comparable); the interval is a "
              f"{CONFIDENCE:.0%} percentile bootstrap over seeds ({n_resamples:,} resamples). `reproduced`: every pair's "
              f"interval excludes 0 in the claimed direction; `contradicted`: some pair's excludes 0 the other way; "
              f"`inconclusive`: otherwise (also with one seed, where no interval exists). The reports' values are "
              f"single runs of the full recipe; ours come from this experiment's budget, so compare orderings, "
              f"not levels.", ""]
    return lines


def _factor_section(factor: str, table: pd.DataFrame, verdicts, metric: str, stem: str) -> list[str]:
    k = scale(metric)
    unit = "%" if k == 100 else ""
    reference = table["reference"].iloc[0]
    shown = pd.DataFrame({
        "level": table["level"], "epoch": table["epoch"], "trials": table["n"],
        f"mean {metric}{' (' + unit + ')' if unit else ''} [{CONFIDENCE:.0%} CI]":
            [f"{num(k * m)} {ci(lo, hi, k, sign=False)}" for m, lo, hi in zip(table["mean"], table["mean_low"], table["mean_high"])],
        f"diff vs {reference} [{CONFIDENCE:.0%} CI]":
            ["(reference)" if lv == reference else f"{num(k * d, sign=True)} {ci(lo, hi, k)}"
             for lv, d, lo, hi in zip(table["level"], table["diff"], table["diff_low"], table["diff_high"])],
        "rank": table["rank"],
    })
    lines = [f"## Factor: {factor}", ""] + _md_table(shown) + [""]
    for v in verdicts:
        lines += [f"Claim {v.claim.text} ({v.claim.source}): **{v.verdict}**" + (f" ({v.note})" if v.note else "") + ".", ""]
    lines += [f"![learning curves per level of {factor}](figures/curves_{stem}.png)", "",
              f"![{factor}: mean per level with CI](figures/levels_{stem}.png)", ""]
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


def _asha_section(experiment: Experiment, figures: Path) -> list[str]:
    plot_asha_rungs(experiment, figures / "asha_rungs.png")
    record = experiment.record
    entry, rungs = record.scheduler_entry, record.rungs
    text = (f"{entry.title} decided at epochs {', '.join(map(str, rungs))}." if rungs else
            f"Scheduler {record.scheduler}: every trial ran to its end." if not entry.stops_early else
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
    from .importance import parameter_importance

    lines = ["## Parameter importance", ""]
    try:
        scores = parameter_importance(experiment)
    except ImportError as exc:
        return lines + [f"Not computed: Optuna's fANOVA needs scikit-learn ({exc}); `pip install scikit-learn`.", ""]
    except (ValueError, RuntimeError) as exc:
        return lines + [f"Not computed: {str(exc).splitlines()[0]}.", ""]
    plot_importance(scores, figures / "importance.png")
    shown = pd.DataFrame({"factor": scores.index, "importance": [f"{v:.3f}" for v in scores]})
    return lines + [f"Optuna's fANOVA on {scores.name}.", ""] + _md_table(shown) + [
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
