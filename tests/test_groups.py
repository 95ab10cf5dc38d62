"""A Tune trial is a design point with its seeds (`tune.trainable.train_group`), on a real local Ray cluster
(2 CPUs) at a tiny budget on real CIFAR-10: its seeds train as they would alone (one after another or fused),
ASHA judges the trial on its seeds' mean, and a killed trial resumes every seed exactly from its own
checkpoints, reading no pickle."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from search_spaces import SCHEDULERS, Ledger, load_space, seed_params, trial_config
from tune import Plan
from tune.run import main

from test_bad_input import plant
from test_tune import kill_session

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
# No GPU per trial, whatever the machine: the trial then trains on the CPU with 1 thread, as the references do.
SMOKE = ["--budget", "smoke", "--no-dashboard", "--no-download", "--gpus-per-trial", "0"]
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")  # what a trial reports as its seeds' mean
ROW_KEYS = ("epoch", *METRICS, "lr", "status", "checkpoint_dir_name", "seed")  # a seed's row but its timings
# Fused seeds sum in other orders (grouped convolutions, batched matmuls) than a seed alone. Measured on
# three_seeds.yaml (SGD, 2 epochs of 200 images, 1 thread): losses at most 1.8e-5 relative apart, accuracies
# at most 1 image of 200. What a fused trial reports is exactly what `fit_group(fused=True)` computes.
FUSED_LOSS_REL = 1e-4
FUSED_ACC_ABS = 2 / 200 + 1e-9  # two images of the 200 trained or validated


@pytest.fixture(scope="module")
def ray_cluster(data_root):
    """One local cluster for the in-process runs; workers inherit the data folder set before its start."""
    import ray

    os.environ["CNNSEARCH_DATA_DIR"] = str(data_root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main([*args])


def _rows(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def _trials(exp: Path) -> list[Path]:
    """The trial folders: those with seed folders (Tune's own files in them may not be there yet after a kill)."""
    return sorted(p for p in exp.iterdir() if p.is_dir() and any(p.glob("seed-*/params.json")))


def _seeds(trial: Path) -> dict[int, list[dict]]:
    """Each seed's own rows (TRIAL/seed-N/result.json), by seed."""
    return {int(p.name.split("-")[1]): _rows(p / "result.json") for p in sorted(trial.glob("seed-*"))}


def _kept(rows: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in ROW_KEYS} for r in rows]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _references(space: Path, data) -> tuple[dict[int, list[dict]], dict[int, list[dict]]]:
    """Each seed of the space's one point trained in this process with 1 thread, as the trial (1 CPU): alone
    (`cnnsearch.engine.fit`), and all fused (`fit_group(fused=True)`); the rows of each, by seed."""
    import torch

    from cnnsearch.config import TrainConfig
    from cnnsearch.engine import fit, fit_group

    plan = Plan(load_space(space), "smoke")
    (group,) = plan.groups()
    configs = [TrainConfig.from_dict(trial_config(p))
               for p in seed_params({**plan.shared_params(), **plan.group_params(group)})]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = {c.seed: fit(c, data, device="cpu").history for c in configs}
        fused = {c.seed: r.history for c, r in zip(configs, fit_group(configs, data, fused=True, device="cpu"))}
    finally:
        torch.set_num_threads(threads)
    return alone, fused


# ------------------------------------------------------------------------------------ seeds as alone
@pytest.fixture(scope="module")
def three_seeds(ray_cluster, tmp_path_factory, cifar10):
    """The one-point, 3-seed space run with --fuse off and with --fuse on; each seed's rows alone and fused."""
    storage = tmp_path_factory.mktemp("three")
    space = DATA / "three_seeds.yaml"
    codes = {fuse: _run("--space", str(space), *SMOKE, "--scheduler", "fifo", "--fuse", fuse,
                        "--storage", str(storage), "--name", fuse) for fuse in ("off", "on")}
    assert codes == {"off": 0, "on": 0}
    trials = {fuse: _trials(storage / fuse) for fuse in codes}
    assert all(len(t) == 1 for t in trials.values()), trials
    return ({fuse: t[0] for fuse, t in trials.items()}, *_references(space, cifar10))


def test_seeds_one_after_another_report_what_each_seed_alone_reports(three_seeds):
    """--fuse off: each seed's rows are `fit`'s of that seed alone, exactly (same kernels, same thread count)."""
    trials, alone, _ = three_seeds
    seeds = _seeds(trials["off"])
    assert sorted(seeds) == [0, 1, 2]
    for seed, rows in seeds.items():
        assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["status"] == "completed"
        assert [{k: r[k] for k in METRICS} for r in rows] == [{k: r[k] for k in METRICS} for r in alone[seed]], seed
    assert len({rows[-1]["val_loss"] for rows in seeds.values()}) == 3  # three seeds, three different runs


def test_fused_seeds_report_what_each_seed_alone_reports_to_rounding(three_seeds):
    """--fuse on: each seed's rows are exactly what `fit_group(fused=True)` computes for the three, and what
    `fit` computes for the seed alone to the fused kernels' rounding (FUSED_LOSS_REL, FUSED_ACC_ABS)."""
    trials, alone, fused = three_seeds
    seeds = _seeds(trials["on"])
    assert sorted(seeds) == [0, 1, 2]
    assert all(r["fused"] for r in _rows(trials["on"] / "result.json"))
    assert not any(r["fused"] for r in _rows(trials["off"] / "result.json"))
    for seed, rows in seeds.items():
        assert [{k: r[k] for k in METRICS} for r in rows] == [{k: r[k] for k in METRICS} for r in fused[seed]], seed
        assert len(rows) == len(alone[seed]) == 2
        for got, expected in zip(rows, alone[seed]):
            for key in METRICS:
                tolerance = {"rel": FUSED_LOSS_REL} if key.endswith("loss") else {"abs": FUSED_ACC_ABS}
                assert got[key] == pytest.approx(expected[key], **tolerance), (seed, got["epoch"], key)


@pytest.mark.parametrize("fuse", ["off", "on"])
def test_a_trial_reports_its_seeds_mean(three_seeds, fuse):
    """What Tune got each epoch (its result.json): each metric's mean over the seeds, their standard error and
    every seed's values, as the seeds' own records have them."""
    trials, _, _ = three_seeds
    seeds = _seeds(trials[fuse])
    reported = _rows(trials[fuse] / "result.json")
    assert [r["epoch"] for r in reported] == [1, 2]
    for row in reported:
        own = [rows[row["epoch"] - 1] for _, rows in sorted(seeds.items())]
        for key in METRICS:
            values = [r[key] for r in own]
            mean = sum(values) / len(values)
            assert row[key] == pytest.approx(mean, rel=1e-12, abs=1e-12), (row["epoch"], key)
            spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            assert row[f"{key}_se"] == pytest.approx((spread / len(values)) ** 0.5, rel=1e-9, abs=1e-12)
        assert row["per_seed"] == {str(r["seed"]): {k: r[k] for k in (*METRICS, "status")} for r in own}


# ----------------------------------------------------------------------------------- ASHA on the mean
@pytest.fixture(scope="module")
def asha_run(ray_cluster, tmp_path_factory):
    storage = tmp_path_factory.mktemp("asha")
    code = _run("--space", str(DATA / "asha_groups.yaml"), *SMOKE, "--scheduler", "asha", "--grace-period", "1",
                "--reduction-factor", "2", "--storage", str(storage), "--name", "asha")
    return code, storage / "asha"


def test_asha_stops_a_trial_with_all_its_seeds_on_their_mean(asha_run):
    code, exp = asha_run
    assert code == 0
    trials = _trials(exp)
    assert len(trials) == 4
    ledger = json.loads((exp / "groups.json").read_text())["groups"]
    assert sorted(ledger) == [t.name for t in trials] and {g["status"] for g in ledger.values()} == {"terminated"}
    reported = {t.name: _rows(t / "result.json") for t in trials}
    lengths = {name: len(rows) for name, rows in reported.items()}
    assert min(lengths.values()) < 4 and max(lengths.values()) == 4, lengths  # some stopped early, not all
    rungs = SCHEDULERS["asha"].rungs(4, {"grace_period": 1, "reduction_factor": 2})
    assert rungs == [1, 2]
    for trial in trials:
        seeds = _seeds(trial)
        rows = reported[trial.name]
        assert sorted(seeds) == [0, 1] and [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) in (*rungs, 4), trial.name  # a trial stops at a rung or at its last epoch
        for seed, own in seeds.items():  # every seed stopped with its trial
            assert [r["epoch"] for r in own] == [r["epoch"] for r in rows], (trial.name, seed)
        for row in rows:  # what ASHA judged: the seeds' mean
            assert row["val_acc"] == pytest.approx(sum(own[row["epoch"] - 1]["val_acc"] for own in seeds.values()) / 2,
                                                   abs=1e-12)
    for name, rows in reported.items():
        if len(rows) == 4:
            continue
        rung = len(rows)
        went_on = [other[rung - 1]["val_acc"] for other in reported.values() if len(other) > rung]
        # ASHA stops a trial below the rung's cutoff, a quantile of the values recorded there before it; the best
        # of those went on.
        assert went_on and rows[-1]["val_acc"] < max(went_on), (name, rung, rows[-1]["val_acc"], went_on)


# -------------------------------------------------------------------------------- a killed trial resumes
KILLED = ["--space", str(DATA / "killed_group.yaml"), *SMOKE, "--scheduler", "fifo", "--max-failures", "0"]


@pytest.fixture(scope="module")
def killed(ray_cluster, data_root, tmp_path_factory):
    """The 1-point, 2-seed space (4 epochs) run as a subprocess with its own Ray cluster, SIGKILLed with that
    cluster once seed 0 has its epoch-2 checkpoint, and meanwhile the same space run uninterrupted in this
    process; then a copy of the folder as the kill left it."""
    storage = tmp_path_factory.mktemp("killed")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # its own Ray temp folder: never joins another cluster
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CNNSEARCH_DATA_DIR": str(data_root), "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": temp}
    log = storage / "run.err"
    proc = subprocess.Popen([sys.executable, "-m", "tune.run", *KILLED, "--num-cpus", "2", "--storage", str(storage),
                             "--name", "killed"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)
    exp = storage / "killed"
    seen = {}

    def kill_at_epoch_2() -> None:
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and \
                    not list(exp.glob("*/seed-0/checkpoint_000002/state.pt")):
                time.sleep(0.05)
            seen["running"] = proc.poll() is None
        finally:
            kill_session(proc.pid)

    watcher = threading.Thread(target=kill_at_epoch_2)
    watcher.start()
    try:
        code = _run(*KILLED, "--storage", str(storage), "--name", "whole")
    finally:
        watcher.join()
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert code == 0
    assert seen["running"], f"the run ended before it could be killed: {log.read_text()[-2000:]}"
    assert list(exp.glob("*/seed-0/checkpoint_000002/state.pt")), log.read_text()[-2000:]
    snapshot = tmp_path_factory.mktemp("snapshot") / "killed"
    shutil.copytree(exp, snapshot)
    (whole,) = _trials(storage / "whole")
    return {"exp": exp, "snapshot": snapshot, "storage": storage, "whole": _seeds(whole)}


def _resume(storage: Path, name: str) -> int:
    """The command a Ctrl-C would print: the same flags, --name, --resume."""
    return _run(*KILLED, "--storage", str(storage), "--name", name, "--resume")


def test_a_killed_trial_resumes_every_seed_exactly(killed):
    before = {seed: rows for seed, rows in _seeds(_trials(killed["snapshot"])[0]).items()}
    # Killed mid-run: seed 0 had its epoch-2 checkpoint (its rows are written just after it), neither seed ended.
    assert 1 <= len(before[0]) < 4 and len(before[1]) < 4, {s: len(r) for s, r in before.items()}
    ledger = json.loads((killed["snapshot"] / "groups.json").read_text())["groups"]
    assert [g["status"] for g in ledger.values()] == ["running"]
    assert _resume(killed["storage"], "killed") == 0
    (trial,) = _trials(killed["exp"])
    after = _seeds(trial)
    assert sorted(after) == [0, 1]
    for seed, rows in after.items():
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[-1]["status"] == "completed"
        assert _kept(rows) == _kept(killed["whole"][seed]), seed
        assert _kept(rows[:len(before[seed])]) == _kept(before[seed]), seed  # what was recorded stays
    assert json.loads((killed["exp"] / "groups.json").read_text())["groups"][trial.name]["status"] == "terminated"


def test_resume_reads_no_pickle(killed, tmp_path):
    """Pickles planted in the folder (Tune's tuner.pkl, searcher state, trial params) are never read: the
    resume finishes the seeds exactly, and no planted code ran."""
    folder = tmp_path / "planted"
    shutil.copytree(killed["snapshot"], folder)
    marker = tmp_path / "code_ran"
    planted = plant(folder, marker)
    assert any(p.name == "tuner.pkl" for p in planted) and any(p.name.startswith("searcher-state") for p in planted)
    pickle.loads((folder / "tuner.pkl").read_bytes())  # the payload works: it would have left the marker
    assert marker.exists()
    marker.unlink()
    assert _resume(tmp_path, "planted") == 0
    assert not marker.exists()
    (trial,) = _trials(folder)
    after = _seeds(trial)
    assert {seed: _kept(rows) for seed, rows in after.items()} == \
           {seed: _kept(rows) for seed, rows in killed["whole"].items()}


@pytest.mark.parametrize("damage, fragment", [
    ("{\"groups\": {\"w1-000", "groups.json is damaged"),
    ("{\"groups\": {\"w1-000_dropout=0.0_s0+1\": {\"wave\": 1, \"label\": \"dropout=0.0\", \"seeds\": [0, 1], "
     "\"status\": \"bogus\"}}, \"looks\": []}", "groups.json is damaged"),
    ("[1, 2, 3]", "groups.json is damaged"),
])
def test_a_damaged_ledger_is_refused_in_one_line(killed, tmp_path, damage, fragment, capsys):
    folder = tmp_path / "damaged"
    shutil.copytree(killed["snapshot"], folder)
    (folder / "groups.json").write_text(damage)
    before = _tree(folder)
    with pytest.raises(SystemExit) as exit_info:
        main([*KILLED, "--storage", str(tmp_path), "--name", "damaged", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and fragment in err[0] and "cannot be resumed" in err[0], err
    assert _tree(folder) == before


# ------------------------------------------------------------------------------------------ the ledger
def test_resume_rebuilds_a_later_waves_trials_by_their_folders(tmp_path):
    """--until-decided numbers a later wave's trials on from the earlier waves' (w2-009_...); a resume must find
    them under those names, and a next wave gives each named point its next block of seeds. A ledger naming a
    trial the space does not have is refused in one line."""
    from pyarrow import fs

    from search_spaces import SpaceError

    plan = Plan(load_space("ablation"), "smoke", scheduler="fifo", until_decided=True, max_seeds=4)
    ledger = Ledger(fs.LocalFileSystem(), str(tmp_path))
    first = plan.wave_groups(ledger)
    ledger.plan(first)
    assert [g.name for g in plan.wave_groups(Ledger.read(fs.LocalFileSystem(), str(tmp_path)))] == \
           [g.name for g in first]
    for name in ledger.groups:
        ledger.groups[name]["status"] = "terminated"
    second = plan.next_groups(ledger, [first[3].point.label, first[5].point.label])
    ledger.plan(second)
    again = plan.wave_groups(Ledger.read(fs.LocalFileSystem(), str(tmp_path)))
    assert [g.name for g in again] == [g.name for g in second] == ["w2-009_lr_decay=0.45_s2+3",
                                                                   "w2-010_dropout=0.8_s2+3"]
    assert plan.next_groups(ledger, [first[3].point.label]) == []  # 4 seeds: the most --max-seeds 4 gives
    ledger.groups["w2-011_nosuch_s2+3"] = {"wave": 2, "label": "nosuch", "seeds": [2, 3], "status": "planned"}
    ledger.write()
    with pytest.raises(SpaceError, match="names a trial 'w2-011_nosuch_s2\\+3' that is not one of this space's") as info:
        plan.wave_groups(Ledger.read(fs.LocalFileSystem(), str(tmp_path)))
    assert "\n" not in str(info.value)


def test_a_resumed_sampled_design_draws_each_unfinished_draw_again_once(tmp_path):
    """--resume of a sampled design: draws that ended are kept, the ones that had not are drawn again first (their
    old folders marked replaced, so a second resume does not draw them once more), and the rest are new draws."""
    from pyarrow import fs

    from tune.trials import sampled_searcher

    plan = Plan(load_space(str(Path(__file__).parent / "data" / "sampled.yaml")), "smoke", num_samples=5)
    ledger = Ledger(fs.LocalFileSystem(), str(tmp_path))
    for i, status in enumerate(["terminated", "terminated", "running", "error"]):
        ledger.mark(f"draw{i}", status, {"seeds": [0], "lr": 0.001 * (i + 1), "dropout": 0.1 * i, "model": "basecnn"})
    searcher, left = sampled_searcher(plan, ledger, None)
    assert left == 3  # 5 draws, 2 ended
    assert searcher._points_to_evaluate == [{"lr": 0.003, "dropout": 0.2}, {"lr": 0.004, "dropout": pytest.approx(0.3)}]
    saved = Ledger.read(fs.LocalFileSystem(), str(tmp_path))
    assert [g["status"] for g in saved.groups.values()] == ["terminated", "terminated", "replaced", "replaced"]
    again, left = sampled_searcher(plan, saved, None)
    assert left == 3 and not again._points_to_evaluate  # nothing is drawn again twice
