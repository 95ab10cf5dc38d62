"""Adaptive replication end to end (`tune.run --until-decided`): waves of seeds on a real local Ray cluster at the
smoke budget on real CIFAR-10, the ledger that records them, the looks replayed from the folder, the report.
The procedure's calibration is tests/test_sequential.py's."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from search_spaces import Ledger
from tune.run import main

SMOKE = ["--budget", "smoke", "--no-dashboard", "--no-download"]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def adaptive_run(data_root, tmp_path_factory):
    """The smoke ablation until decided, at most 4 seeds per point: (exit code, folder, console)."""
    import os

    import ray

    os.environ["CNNSEARCH_DATA_DIR"] = str(data_root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    storage = tmp_path_factory.mktemp("adaptive")
    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            code = main(["--space", "ablation", *SMOKE, "--until-decided", "--max-seeds", "4",
                         "--storage", str(storage), "--name", "ad"])
    finally:
        ray.shutdown()
    return code, storage / "ad", console.getvalue()


def test_later_waves_add_seeds_only_to_the_points_of_undecided_claims(adaptive_run):
    code, exp, out = adaptive_run
    assert code == 0, out[-2000:]
    ledger = Ledger.read(pafs.LocalFileSystem(), str(exp))
    looks = ledger.looks
    assert [look["wave"] for look in looks] == list(range(1, len(looks) + 1)) and len(looks) >= 2
    first = {g["label"]: g["seeds"] for g in ledger.groups.values() if g["wave"] == 1}
    second = {g["label"]: g["seeds"] for g in ledger.groups.values() if g["wave"] == 2}
    assert len(first) == 9 and all(seeds == [0, 1] for seeds in first.values())
    assert sorted(second) == sorted(looks[0]["extend"]) and second  # exactly the points look 1 named
    assert all(seeds == [2, 3] for seeds in second.values())  # the next block of seeds, never one twice
    # a point gets seeds if and only if it is a level of a claim still undecided after look 1
    open_points = {point for r in looks[0]["rows"] if r["state"] == "undecided" for point in r["pair"].split()[::2]}
    assert set(second) == open_points
    assert all(g["status"] == "terminated" for g in ledger.groups.values())
    # the last look says why it stopped, and the runner said it too
    assert looks[-1]["stop"] and f"seeds: stopped adding them: {looks[-1]['stop']}" in out
    assert "look 1 of 2 (level 0.0250):" in out  # 2 seeds, then 2 more up to 4: two looks, alpha split equally


def test_the_looks_replay_from_the_folder_alone(adaptive_run):
    """What the runner decided is a function of what the folder holds: a resume takes the same decisions."""
    from analysis import load_experiment
    from analysis.adaptive import looks_of

    _, exp, _ = adaptive_run
    ledger = Ledger.read(pafs.LocalFileSystem(), str(exp))
    replay = looks_of(load_experiment(exp), waves=len(ledger.looks), max_seeds=4, block=2)
    assert [look.to_json() for look in replay] == ledger.looks


def test_every_seed_is_a_trial_and_the_report_shows_the_looks(adaptive_run, tmp_path):
    from analysis import load_experiment
    from analysis.report import write_report

    _, exp, _ = adaptive_run
    experiment = load_experiment(exp)
    ledger = Ledger.read(pafs.LocalFileSystem(), str(exp))
    assert len(experiment.trials) == sum(len(g["seeds"]) for g in ledger.groups.values())
    assert set(experiment.trials["status"]) == {"completed"}
    report = write_report(experiment, tmp_path / "report", test=False).read_text()
    assert "## Adaptive replication" in report and (tmp_path / "report" / "figures" / "looks.png").stat().st_size > 0
    assert f"It stopped after look {len(ledger.looks)}: {ledger.looks[-1]['stop']}." in report


@pytest.mark.parametrize("args, message", [
    (["--space", str(DATA / "one_trial.yaml"), "--until-decided", "--scheduler", "fifo"], "there is no such file"),
    (["--space", "ablation", "--until-decided", "--scheduler", "asha"], "use --scheduler fifo"),
    (["--space", "ablation", "--max-seeds", "4"], "add --until-decided"),
    (["--space", "search", "--until-decided"], "a sampled design has none"),
    (["--space", "ablation", "--until-decided", "--max-seeds", "0"], "--max-seeds must be an integer in [1, 1000]"),
    (["--space", "ablation", "--until-decided", "--max-seeds", "1"], "below the 2 seeds the first wave runs"),
])
def test_bad_adaptive_input_is_one_line_exit_2(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*args, *SMOKE, "--storage", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing written
