"""The Ray Tune layer: a trial per design point with its seeds (`cnnsearch.fit_group`), `run_experiment` and the
`python -m tune.run` runner.

    from search_spaces import load_space
    from tune import Plan, RunOptions, run_experiment

    result = run_experiment(Plan(load_space("ablation"), "smoke"), RunOptions(name="abl-smoke"))

The only package of the project that imports Ray. What runs (`Plan`, search_spaces/plan.py) is Ray-free; the
other attributes load on first use (PEP 562): the runner sets Ray's environment after parsing its arguments,
and Ray reads it once, at import.
"""
from __future__ import annotations

from cnnsearch.lazy import lazy_attributes
from search_spaces.plan import Plan

__all__ = ["Plan", "RunOptions", "RunError", "RunResult", "Interrupted", "run_experiment"]

_HOME = {"RunOptions": "options", "RunError": "options", "RunResult": "experiment",
         "Interrupted": "experiment", "run_experiment": "experiment"}

__getattr__, __dir__ = lazy_attributes(__name__, _HOME)
