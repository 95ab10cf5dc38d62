"""The benchmarks' fixed workloads (the benchmarks themselves run on a GPU, not in CI)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from search_spaces import load_space

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gpu_bench_runs_the_ablation_at_the_size_of_its_target(tmp_path):
    """Issue 12's target is the full ablation as 18 trials (9 points x 2 seeds); the shipped space has since
    grown (3 seeds, 8 on the base point), so bench/gpu.py writes the target's size beside its runs."""
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH / "gpu.py")
    gpu = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
    spec.loader.exec_module(gpu)
    space = load_space(str(gpu.issue_ablation(str(tmp_path / "spaces"))))
    shipped = load_space("ablation")
    assert space.name == "ablation" and space.num_trials("full") == 18 and shipped.num_trials("full") > 18
    for budget in ("smoke", "cpu"):  # nothing else changed
        assert space.config(budget) == shipped.config(budget) and space.num_trials(budget) == shipped.num_trials(budget)
    assert space.config("full") == shipped.config("full") and space.points() == shipped.points()
