"""search_spaces.estimate: the run time --dry-run prints, from the measured speeds in search_spaces/speeds.json (no Ray)."""
from __future__ import annotations

import dataclasses
import re

import pytest

from search_spaces import list_spaces, load_space
from search_spaces.estimate import Estimate, _halving_epochs, _makespan, estimate, speed_shape
from search_spaces.plan import Plan


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("budget", ["smoke", "cpu"])
def test_every_shipped_space_has_an_estimate_on_this_cpu(name, budget):
    """Every shape a shipped space trains at a CPU budget has a measured speed: a new space or budget
    needs `python bench/epoch_times.py --write search_spaces/speeds.json`."""
    found = estimate(Plan(load_space(name), budget), device="cpu", concurrent=2)
    assert isinstance(found, Estimate), found
    assert found.most_s > 0 and (found.likely_s is None or found.likely_s <= found.most_s)


def _as_recorded(space, budget: str, seeds: tuple[int, ...]):
    """`space` with `budget` at the seeds of a recorded run (before the base point ran more)."""
    changed = dataclasses.replace(space.budgets[budget], seeds=seeds, base_seeds=None)
    return dataclasses.replace(space, budgets={**space.budgets, budget: changed})


def test_estimate_of_the_ablation_matches_the_recorded_runs():
    """bench/RESULTS.md (ASHA economy), same 2-core machine: FIFO 144 epochs in 33.4 min, ASHA (grace 2,
    reduction 3) 72 epochs in 18.1 min, both 9 points x 2 seeds. The estimate is built from other
    measurements (per-shape speeds), so agreeing within a factor of 1.5 checks both."""
    shipped = load_space("ablation")
    assert estimate(Plan(shipped, "cpu"), device="cpu", concurrent=2).epochs == shipped.num_trials("cpu") * 8
    space = _as_recorded(shipped, "cpu", (0, 1))
    fifo = estimate(Plan(space, "cpu", scheduler="fifo"), device="cpu", concurrent=2)
    asha = estimate(Plan(space, "cpu", scheduler="asha"), device="cpu", concurrent=2)
    assert estimate(Plan(space, "cpu"), device="cpu", concurrent=2) == fifo  # FIFO: the claims space's default
    assert fifo.epochs == 144 and fifo.likely_s is None
    assert asha.likely_epochs == 64  # 18 trials x 2 epochs, 6 x 4 more, 2 x 2 more
    assert 33.4 / 1.5 < fifo.most_s / 60 < 33.4 * 1.5
    assert 18.1 / 1.5 < asha.likely_s / 60 < 18.1 * 1.5
    assert re.fullmatch(r"estimated time: \d+ min at most \(144 epochs, 2 at once\); about \d+ min if the scheduler "
                        r"stops trials at its rungs \(~64 epochs\); speeds: .+", asha.describe())


def test_gpu_estimate_uses_the_h100_table_and_says_what_it_lacks():
    """The full ablation under MPS, 4 trials on one H100, measured 382 s of tuning loop (bench/RESULTS.md), 9 points
    x 2 seeds."""
    space = _as_recorded(load_space("ablation"), "full", (0, 1))
    found = estimate(Plan(space, "full", scheduler="fifo"), device="cuda", concurrent=4, gpu_share=0.25, mps=True)
    assert 382 / 1.5 < found.most_s < 382 * 1.5 and "H100" in found.source
    missing = estimate(Plan(load_space("architectures"), "full"), device="cuda", concurrent=1)
    assert isinstance(missing, str) and "resnet50 width 1.0 batch 64" in missing
    assert "basecnn" not in missing  # measured: only the models without a figure are named
    other = estimate(Plan(space, "smoke", dataset="imagefolder:/nowhere"), device="cpu", concurrent=2)
    assert other.startswith("estimated time: none") and "imagefolder:/nowhere" in other


def test_speed_shape_fills_the_family_defaults():
    assert speed_shape({"model": "resnet18", "width": 0.25, "batch_size": 128, "stem_kernel": None}) == speed_shape(
        {"model": "resnet18", "width": 0.25, "batch_size": 128, "stem_kernel": 3, "blocks_per_stage": (2, 2, 2, 2)})
    assert speed_shape({"model": "basecnn", "batch_size": 64}) == {"model": "basecnn", "batch_size": 64, "width": 1.0}


def test_schedule_arithmetic():
    assert _makespan([10, 10, 10], 2) == 20 and _makespan([5, 1, 1, 1], 2) == 5 and _makespan([3], 4) == 3
    assert _halving_epochs(18, [2, 6], 8, 3) == 64
    assert _halving_epochs(16, [1], 2, 2) == 16 + 8
