"""The benchmarks' fixed workloads and plumbing (their figures come from a GPU, not from CI)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
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


def test_gpu_bench_plumbing_on_the_cpu(tmp_path, data_root):
    """bench/gpu.py's worker pool, on the CPU at a tiny size: every cell the device session will time, one
    trial, four sharing and four seeds fused, comes back with figures, not an error (a broken cell would
    waste the device's minutes)."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--cpu-check", "--json", str(out),
                           "--data-dir", str(data_root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cell = json.loads(out.read_text())["rows"]["basecnn-b64"]["eager"]
    assert set(cell) == {"x1", "x4", "x4_fused"}
    for key, trials in (("x1", 1), ("x4", 4), ("x4_fused", 1)):
        assert "error" not in cell[key], cell[key]
        assert cell[key]["images_per_s"] > 0 and len(cell[key]["per_trial_images_per_s"]) == trials
    assert "4 fused img/s" in proc.stdout
