"""analysis: turn an experiment folder that `python -m tune.run` wrote into tables, figures and verdicts.

    exp = load_experiment("runs/ablation-cpu-...")        # exp.trials, exp.epochs (pandas)
    effects(exp)                                          # every level at equal epoch, CIs over seeds
    check_claims(exp, load_claims("analysis/claims/ablation.yaml"))
    write_report(exp, "out/")                             # report.md, figures/, trials.csv, epochs.csv

Attributes load on first use (PEP 562), so `python -m analysis --bad-flag` answers before pandas,
torch and matplotlib are imported.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    # loading
    "Experiment", "ExperimentError", "SkippedTrialWarning", "load_experiment",
    # statistics and effects
    "Estimate", "bootstrap_diff", "bootstrap_mean", "Comparison", "compare", "level_effects", "effects",
    "group_trials", "level_curves", "critical_epochs", "parameter_importance", "asha_rungs", "alive_per_epoch", "cost",
    # claims
    "Claim", "ClaimSet", "ClaimsError", "Verdict", "load_claims", "check_claims", "verdicts_table", "default_claims_file",
    # figures
    "plot_level_curves", "plot_level_effects", "plot_asha_rungs", "plot_overfitting", "plot_importance",
    # best trial and report
    "BestTrial", "best_trial", "evaluate_best", "write_report",
]

_HOME = {
    "Experiment": "load", "ExperimentError": "load", "SkippedTrialWarning": "load", "load_experiment": "load",
    "Estimate": "stats", "bootstrap_diff": "stats", "bootstrap_mean": "stats",
    "Comparison": "comparisons", "compare": "comparisons", "level_effects": "comparisons", "effects": "comparisons",
    "group_trials": "comparisons",
    "level_curves": "curves", "critical_epochs": "curves",
    "parameter_importance": "importance",
    "asha_rungs": "budget", "alive_per_epoch": "budget", "cost": "budget",
    "Claim": "claims", "ClaimSet": "claims", "ClaimsError": "claims", "Verdict": "claims", "load_claims": "claims",
    "check_claims": "claims", "verdicts_table": "claims", "default_claims_file": "claims",
    "plot_level_curves": "figures", "plot_level_effects": "figures", "plot_asha_rungs": "figures",
    "plot_overfitting": "figures", "plot_importance": "figures",
    "BestTrial": "best", "best_trial": "best", "evaluate_best": "best",
    "write_report": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
