"""analysis: turn an experiment folder that `python -m tune.run` wrote into tables, figures and verdicts.

    exp = load_experiment("runs/ablation-cpu-...")        # exp.record (what ran), exp.trials, exp.epochs (pandas)
    effects(exp)                                          # every level against its reference, at equal epoch
    check_claims(exp, load_claims("analysis/claims/ablation.yaml"))   # verdicts, Holm over the file
    write_report(exp, "out/")                             # report.md, figures/, trials.csv, epochs.csv, claims.csv

The names below are the public surface; the modules hold the rest (`analysis.inference` for the
design-pooled t test, `analysis.verdicts` for the verdict rules and their calibration, `analysis.power`,
`analysis.sequential` for verdicts after each wave of an adaptive study,
`analysis.comparisons.group_trials`, ...). Attributes load on first use (PEP 562), so
`python -m analysis --bad-flag` answers before pandas, torch and matplotlib are imported.
"""
from __future__ import annotations

from cnnsearch.lazy import lazy_attributes

__all__ = [
    # loading
    "Experiment", "ExperimentError", "load_experiment",
    # effects
    "compare", "level_effects", "effects", "level_curves", "critical_epochs", "parameter_importance",
    "importance_with_floor", "cost",
    # claims
    "ClaimsError", "Verdict", "ClaimsCheck", "load_claims", "check_claims", "verdicts_table", "default_claims_file",
    # figures
    "plot_level_curves", "plot_level_effects", "plot_asha_rungs", "plot_overfitting", "plot_importance",
    # best trial and report
    "evaluate_best", "write_report",
    # adaptive replication: verdicts after each wave of seeds
    "Spending", "Look", "look",
]

_HOME = {
    "Experiment": "load", "ExperimentError": "load", "load_experiment": "load",
    "compare": "comparisons", "level_effects": "comparisons", "effects": "comparisons",
    "level_curves": "curves", "critical_epochs": "curves", "parameter_importance": "importance",
    "importance_with_floor": "importance", "cost": "costs",
    "ClaimsError": "claims", "Verdict": "claims", "ClaimsCheck": "claims", "load_claims": "claims",
    "check_claims": "claims",
    "verdicts_table": "claims", "default_claims_file": "claims",
    "plot_level_curves": "figures", "plot_level_effects": "figures", "plot_asha_rungs": "figures",
    "plot_overfitting": "figures", "plot_importance": "figures",
    "evaluate_best": "best", "write_report": "report",
    "Spending": "sequential", "Look": "sequential", "look": "sequential",
}

__getattr__, __dir__ = lazy_attributes(__name__, _HOME)
