"""The Tune layer on a real local Ray cluster (2 CPUs), at the `smoke` budget on real CIFAR-10.

A Tune trial is a design point with its seeds: `tune_results` reads what each trial reported to Tune (its
seeds' means, each epoch), `trial_results` each seed's own record (TRIAL/seed-N/result.json)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from search_spaces import SCHEDULERS, ExperimentRecord, load_space
from tune import Plan, RunError, RunOptions, run_experiment
from tune.run import main

SMOKE = ["--budget", "smoke", "--no-dashboard", "--no-download"]
DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster(data_root):
    """One local cluster for the in-process runs: 2 CPUs and 1 logical GPU (for fractional packing).
    Workers inherit the environment, so the data folder is set before the start."""
    import ray

    os.environ["CNNSEARCH_DATA_DIR"] = str(data_root)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid`: the driver and the local Ray cluster it started (GCS,
    raylet, workers), and nothing else on the machine (unlike `ray stop`, which kills every cluster)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp session ...
            if int(fields[3]) == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile


def trial_workers(root: int) -> list[int]:
    """The Ray workers running a trial (`train_group` in an ImplicitFunc actor) among the descendants of
    process `root`: the workers of the cluster that `root` started, not of any other cluster on the machine."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return [pid for pid, command in commands.items()
            if ("ImplicitFunc" in command or "train_group" in command) and descends(pid)]


def _rows(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def trial_results(exp: Path) -> dict[str, list[dict]]:
    """Every seed's own rows (TRIAL/seed-N/result.json, one per epoch), by "TRIAL/seed-N"."""
    return {f"{seed.parent.name}/{seed.name}": _rows(seed / "result.json")
            for seed in sorted(exp.glob("*/seed-*")) if seed.is_dir()}


def tune_results(exp: Path) -> dict[str, list[dict]]:
    """Every Tune trial's reported rows (its seeds' means, per_seed, ...), by trial folder. Tune writes these
    files in the driver and copies them to the folder from time to time: a killed driver's last ones are lost."""
    return {trial.name: _rows(trial / "result.json")
            for trial in sorted(exp.iterdir()) if trial.is_dir() and (trial / "params.json").exists()}


METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")  # what a trial reports as its seeds' mean
TIMING = ("epoch_time_s", "images_per_s", "setup_s", "time_total_s")  # what a rerun of an epoch may change


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_complete(results: dict[str, list[dict]], epochs_allowed: set[int]) -> None:
    for name, rows in results.items():
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(1, len(rows) + 1)), f"{name}: epochs {epochs} missing or duplicated"
        assert len(rows) in epochs_allowed, f"{name}: {len(rows)} epochs"
        for r in rows:
            assert 0.0 <= r["val_acc"] <= 1.0 and r["train_loss"] > 0


def assert_means_of_seeds(exp: Path, name: str, rows: list[dict]) -> None:
    """Tune trial `name` reported, at every epoch of `rows`, each seed's row as that seed recorded it and
    their mean; its seeds' records end at its last reported epoch."""
    seeds = json.loads((exp / name / "params.json").read_text())["seeds"]
    own = {str(s): _rows(exp / name / f"seed-{s}" / "result.json") for s in seeds}
    last = rows[-1]["epoch"]
    assert {s: len(r) for s, r in own.items()} == {str(s): last for s in seeds}, f"{name}: seeds stop apart"
    for r in rows:
        assert list(r["per_seed"]) == [str(s) for s in seeds] and r["seeds"] == len(seeds), name
        for seed, values in r["per_seed"].items():
            mine = own[seed][r["epoch"] - 1]
            assert mine["epoch"] == r["epoch"] and values == {k: mine[k] for k in (*METRICS, "status")}, name
        for m in METRICS:
            mean = sum(v[m] for v in r["per_seed"].values()) / len(seeds)
            assert r[m] == pytest.approx(mean, rel=1e-12, abs=1e-15), (name, r["epoch"], m)


@pytest.fixture(scope="module")
def asha_run(ray_cluster, tmp_path_factory):
    """The smoke ablation under ASHA, logging to MLflow too: (exit code, folder, seconds, console output)."""
    storage = tmp_path_factory.mktemp("asha")
    start = time.perf_counter()
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = main(["--space", "ablation", *SMOKE, "--scheduler", "asha", "--log-to", "mlflow", "--storage", str(storage), "--name", "abl"])
    return code, storage / "abl", time.perf_counter() - start, console.getvalue()


def test_smoke_ablation_runs_every_trial(asha_run):
    """9 design points, each one Tune trial training its 2 seeds: 9 trials, 18 seed runs, each seed with
    the params of its point and its seed, and the ledger naming every trial."""
    code, exp, seconds, _ = asha_run
    assert code == 0
    trials, seeds = tune_results(exp), trial_results(exp)
    assert len(trials) == 9 and len(seeds) == 18  # 9 design points x 2 seeds
    assert_complete(trials, {1, 2})
    assert_complete(seeds, {1, 2})
    record = ExperimentRecord.read(str(exp))
    assert (record.space, record.budget, record.scheduler, record.num_trials) == ("ablation", "smoke", "asha", 18)
    assert record.settings == {"grace_period": 1, "reduction_factor": 2}
    provenance = record.provenance  # what ran it: the code and the versions
    assert len(provenance.source_sha256) == 64 and provenance.versions["ray"] and provenance.versions["torch"]
    assert provenance.commit is None or re.fullmatch(r"[0-9a-f]{40}", provenance.commit)
    assert provenance.device.startswith(("cpu", "cuda")) and provenance.python.startswith("3.")
    params = {name: json.loads((exp / name / "params.json").read_text()) for name in trials}
    labels = {p["design_point"]["label"] for p in params.values()}
    assert len(labels) == 9 and "base" in labels
    for name, group in params.items():
        assert group["seeds"] == [0, 1] and group["group"] == name and "seed" not in group
        assert trials[name][0]["config"] == group  # what Tune ran is what the folder says
        for seed in (0, 1):
            own = json.loads((exp / name / f"seed-{seed}" / "params.json").read_text())
            assert own == {**{k: v for k, v in group.items() if k not in ("seeds", "group")}, "seed": seed}
            assert {r["seed"] for r in seeds[f"{name}/seed-{seed}"]} == {seed}
    ledger = json.loads((exp / "groups.json").read_text())["groups"]
    assert {name: (g["wave"], g["label"], g["seeds"], g["status"]) for name, g in ledger.items()} == {
        name: (1, group["design_point"]["label"], [0, 1], "terminated") for name, group in params.items()}
    assert seconds < 180, f"smoke ablation took {seconds:.0f}s"


def test_asha_stops_trials_at_rungs(asha_run):
    """Smoke: 2 epochs, grace 1, reduction 2: every trial reaches the rung at epoch 1; ASHA, judging each
    trial by its seeds' mean, lets only the better half on, so some trials stop there and some finish. A
    stopped trial stops whole: its seeds' records end at the epoch it reported last, whose value is theirs."""
    _, exp, _, _ = asha_run
    trials = tune_results(exp)
    lengths = [len(rows) for rows in trials.values()]
    assert set(lengths) == {1, 2}, lengths
    for name, rows in trials.items():
        assert_means_of_seeds(exp, name, rows)


@pytest.mark.parametrize("max_t, grace, factor", [(2, 1, 2), (8, 2, 3), (30, 5, 3), (30, 1, 2), (9, 3, 3)])
def test_asha_rungs_are_where_ray_puts_them(max_t, grace, factor):
    """The registry's rungs (the report's figure and notes) against Ray's own ASHAScheduler."""
    from ray.tune.schedulers import ASHAScheduler

    settings = {"grace_period": grace, "reduction_factor": factor}
    ray_rungs = {milestone for milestone, _ in
                 ASHAScheduler(time_attr="epoch", max_t=max_t, **settings)._brackets[0]._rungs}
    assert SCHEDULERS["asha"].rungs(max_t, settings) == sorted(r for r in ray_rungs if r < max_t)


def test_hyperband_is_one_registry_entry(ray_cluster, tmp_path):
    """Ray's HyperBand through the scheduler registry. 6 trials (points of 2 seeds) of at most 3 epochs,
    keeping 1/2: Ray fills a bracket of 3 trials that all run 3 epochs, then one that starts at 1 epoch,
    halves, and stops its last two at 2. A paused trial's seeds continue from their checkpoints; the
    analysis reads the stopped trials' seeds from the ledger."""
    from analysis import load_experiment

    space = tmp_path / "six_points.yaml"
    space.write_text((DATA / "analysis_space.yaml").read_text()
                     .replace("dropout: {levels: [0.0, 0.5]}", "dropout: {levels: [0.0, 0.5, 0.25]}")
                     .replace("lr_decay: {levels: [0.9, 0.45]}", "lr_decay: {levels: [0.9, 0.45, 0.7, 0.2]}"))
    code = main(["--space", str(space), *SMOKE, "--scheduler", "hyperband", "--storage", str(tmp_path), "--name", "hb"])
    assert code == 0
    trials = tune_results(tmp_path / "hb")
    assert sorted(len(rows) for rows in trials.values()) == [1, 2, 2, 3, 3, 3]
    assert_complete(trials, {1, 2, 3})  # paused trials resume where they stopped: no epoch twice or lost
    assert_complete(trial_results(tmp_path / "hb"), {1, 2, 3})
    for name, rows in trials.items():
        assert_means_of_seeds(tmp_path / "hb", name, rows)
    exp = load_experiment(tmp_path / "hb")
    assert (exp.record.scheduler, exp.record.settings, exp.record.rungs) == ("hyperband", {"reduction_factor": 2}, [1, 2])
    seeds = exp.trials
    assert len(seeds) == 12 and list(seeds["stopped_early"]) == list(seeds["epochs"] < 3)
    assert set(seeds.loc[seeds["stopped_early"], "status"]) == {"stopped"}
    assert sorted(seeds["epochs"]) == sorted(2 * [len(rows) for rows in trials.values()])


def test_live_view_tensorboard_mlflow_and_kept_checkpoints(asha_run):
    """Every trial (a point with its seeds) gets TensorBoard event files with its seeds' mean val_acc per
    epoch (read by TensorBoard's own reader), an MLflow run in the SQLite store in --storage (--log-to
    mlflow) with the same values, and a folder named after its wave, index, point and seeds; each seed keeps
    only the checkpoints of its best and its last epoch, and Tune keeps none. The console shows progress
    lines, not Tune's tables, and labels the best epoch's value."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, exp, _, out = asha_run
    trials, seeds = tune_results(exp), trial_results(exp)
    assert "== Status ==" not in out and "+--" not in out  # no Tune table
    progress = [line for line in out.splitlines() if re.match(r"\[\s*\d+:\d\d\] ", line)]
    epochs = sum(len(rows) for rows in trials.values())
    assert re.search(rf"9/9 trials ended \(\d+ stopped early\); {epochs} epochs; best val_acc 0\.\d{{4}} "
                     r"\(\S+ seeds 0,1, epoch [12]\)$", progress[-1]), progress
    storage = exp.parent
    assert f"watch: tensorboard --logdir {exp}" in out and f"mlflow ui --backend-store-uri sqlite:///{storage}" in out
    summary = re.search(r"^best trial: val_acc (0\.\d{4}), its seeds' mean \(its best epoch, [12] of [12]; "
                        r"last epoch 0\.\d{4}\)", out, re.M)
    assert summary and float(summary.group(1)) == round(max(r["val_acc"] for rows in trials.values() for r in rows), 4)

    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    mlflow_curves = {}  # trial id (the end of the run's name, train_group_ID) -> [(epoch, val_acc)]
    for run in client.search_runs([client.get_experiment_by_name("abl").experiment_id]):
        history = sorted(client.get_metric_history(run.info.run_id, "val_acc"), key=lambda m: m.step)
        mlflow_curves[run.data.tags["trial_name"].rsplit("_", 1)[-1]] = [(m.step, m.value) for m in history]
    assert len(mlflow_curves) == len(trials) == 9
    indexes = []
    for name, rows in trials.items():
        point = json.loads((exp / name / "params.json").read_text())["design_point"]["label"]
        folder = re.fullmatch(r"w1-(\d{3})_(\S+)_s0\+1", name)
        assert folder and folder.group(2) == point.replace("[3,3,3,3]", "3-3-3-3"), name
        indexes.append(int(folder.group(1)))
        epochs, values = [r["epoch"] for r in rows], [r["val_acc"] for r in rows]
        events = EventAccumulator(str(exp / name))
        events.Reload()
        for curve in ([(e.step, e.value) for e in events.Scalars("ray/tune/val_acc")], mlflow_curves[rows[0]["trial_id"]]):
            assert [step for step, _ in curve] == epochs and [v for _, v in curve] == pytest.approx(values)
        assert not list((exp / name).glob("checkpoint_*")) and {r["checkpoint_dir_name"] for r in rows} == {None}
        for seed in (0, 1):
            own = seeds[f"{name}/seed-{seed}"]
            kept = {p.name for p in (exp / name / f"seed-{seed}").glob("checkpoint_*")}
            by_name = {r["checkpoint_dir_name"]: r for r in own}
            assert own[-1]["checkpoint_dir_name"] in kept and len(kept) <= 2, (name, seed, kept)
            assert all((exp / name / f"seed-{seed}" / k / "state.pt").is_file() for k in kept)
            assert max(by_name[k]["val_acc"] for k in kept) == max(r["val_acc"] for r in own)
    assert sorted(indexes) == list(range(9)) and "w1-000_base_s0+1" in trials  # the plan's order, the base first


def test_optuna_search_keeps_a_study_optuna_can_open(ray_cluster, tmp_path, capsys):
    """--search optuna keeps Optuna's study in the experiment folder (SQLite), which optuna-dashboard
    opens: one Optuna trial per Tune trial (a draw trained with 2 seeds), valued per epoch by its seeds' mean."""
    import optuna

    space = tmp_path / "sampled2.yaml"
    space.write_text((DATA / "sampled.yaml").read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    code = main(["--space", str(space), *SMOKE, "--scheduler", "fifo", "--search", "optuna",
                 "--gpus-per-trial", "0", "--storage", str(tmp_path), "--name", "opt"])
    assert code == 0
    exp = tmp_path / "opt"
    study_file = exp / "optuna.db"
    assert f"optuna-dashboard sqlite:///{study_file}" in capsys.readouterr().out
    study = optuna.load_study(study_name="cnnsearch", storage=f"sqlite:///{study_file}")
    trials = tune_results(exp)
    assert len(study.trials) == len(trials) == 3 and len(trial_results(exp)) == 6
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    by_draw = {}  # (lr, dropout) -> the trial's rows
    for name, rows in trials.items():
        assert_means_of_seeds(exp, name, rows)
        params = json.loads((exp / name / "params.json").read_text())
        assert params["seeds"] == [0, 1] and name.startswith("basecnn_lr=")
        assert name.endswith(f"_s0+1_{rows[0]['trial_id']}")
        by_draw[(params["lr"], params["dropout"])] = rows
    for t in study.trials:
        rows = by_draw[(t.params["lr"], t.params["dropout"])]
        assert t.value == pytest.approx(rows[-1]["val_acc"])
        assert t.intermediate_values == pytest.approx({r["epoch"]: r["val_acc"] for r in rows}) and len(rows) == 2


def test_run_experiment_from_python(ray_cluster, tmp_path):
    """What a notebook cell does: a Plan, RunOptions, a RunResult; a taken folder is a RunError, not an exit."""
    plan = Plan(load_space(str(DATA / "one_trial.yaml")), "smoke", scheduler="fifo")
    options = RunOptions(storage=str(tmp_path), name="py", download=False, dashboard=False)
    result = run_experiment(plan, options)
    assert (result.path, result.trials, result.errors) == (str(tmp_path / "py"), 1, 0)
    assert result.best.metric == "val_acc" and 0.0 <= result.best.value <= 1.0
    assert result.best.changes == {"dropout": 0.0} and result.best.config["model"] == "basecnn"  # base sets no dropout
    assert ExperimentRecord.read(result.path).command is None  # not started from the command line
    with pytest.raises(RunError, match="already exists") as info:
        run_experiment(plan, options)
    assert "\n" not in str(info.value)


def test_fractional_gpus_pack_four_trials(ray_cluster, tmp_path):
    """1 logical GPU, 0.25 per trial (and 0.5 CPU): the 4 trials (4 design points of one seed) must all
    run at the same time. Each trains for seconds, so the overlap does not hinge on when each cold worker
    finished its imports."""
    code = main(["--space", str(DATA / "four_trials.yaml"), *SMOKE, "--scheduler", "fifo",
                 "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5", "--storage", str(tmp_path), "--name", "frac"])
    assert code == 0
    spans = []
    for rows in tune_results(tmp_path / "frac").values():
        assert rows[-1]["device"] == "cpu"  # logical GPUs only: trials still train on the CPU
        assert len(rows) == 3 and rows[-1]["seeds"] == 1
        # Tune's `timestamp` is whole seconds; the trial's own start plus Tune's running total is exact.
        spans.append((rows[0]["started_at"], rows[0]["started_at"] + rows[-1]["time_total_s"]))
    assert len(spans) == 4
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 4, f"at most {most} trials overlapped: {spans}"


def test_killed_worker_is_retried_from_the_seeds_checkpoints(ray_cluster, tmp_path):
    """A trial of 2 seeds and 3 epochs, its Ray worker SIGKILLed once both seeds have recorded epoch 1:
    Tune retries the trial, which continues each seed from its own checkpoint; every seed's rows are those
    of an uninterrupted run of the same trial (to the bit; only timings differ), the rows written before the
    kill are kept as they were, and Tune's last report is the uninterrupted run's mean."""
    args = ["--space", str(DATA / "two_seeds.yaml"), *SMOKE, "--scheduler", "fifo", "--storage", str(tmp_path)]
    assert main([*args, "--name", "clean"]) == 0
    clean = trial_results(tmp_path / "clean")

    exp = tmp_path / "killed"
    killed, before = [], {}

    def kill_after_epoch_1() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            seeds = trial_results(exp) if exp.exists() else {}
            # Each seed writes its checkpoint, then its rows: both seeds' epoch-1 rows mean both checkpoints.
            if len(seeds) == 2 and all(len(rows) >= 1 for rows in seeds.values()) and \
                    all(p.is_file() for p in exp.glob("*/seed-0/checkpoint_000001/state.pt")):
                workers = trial_workers(os.getpid())
                before.update(seeds)
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(workers)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_epoch_1, daemon=True)
    killer.start()
    code = main([*args, "--name", "killed"])
    killer.join(timeout=10)
    assert code == 0
    assert len(killed) == 1, f"the trial's worker was not found (or not alone): {killed}"
    assert all(len(rows) < 3 for rows in before.values()), "the trial ended before the kill"
    after = trial_results(exp)
    assert list(after) == list(clean) == ["w1-000_dropout=0.0_s0+1/seed-0", "w1-000_dropout=0.0_s0+1/seed-1"]
    assert_complete(after, {3})
    for name, rows in after.items():
        assert untimed(rows) == untimed(clean[name]), name
        assert rows[: len(before[name])] == before[name], name  # continued from its checkpoint, not run again
    trial = "w1-000_dropout=0.0_s0+1"
    assert (exp / trial / "error.txt").is_file()  # Tune saw the trial fail, and ran it again
    reported = tune_results(exp)[trial]  # the retry reports from the epoch after its seeds' checkpoints
    epochs = [r["epoch"] for r in reported]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3, epochs
    assert_means_of_seeds(exp, trial, reported)
    assert reported[-1]["val_acc"] == tune_results(tmp_path / "clean")[trial][-1]["val_acc"]
    assert json.loads((exp / "groups.json").read_text())["groups"][trial]["status"] == "terminated"


def test_resume_after_driver_is_killed(data_root, tmp_path):
    """SIGKILL the driver (and its local cluster) once some seeds have finished, then --resume: every seed
    of every trial finishes, nothing recorded before the kill is lost or changed, and no epoch is missing or
    recorded twice. The space is the smoke ablation with 4 seeds on the base point (9 trials, 20 seed runs),
    so the trials not yet started at the kill, and the unfinished ones, come from the record and the
    ledger, each once, and continue each seed from its own checkpoint."""
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root), "RAY_USAGE_STATS_ENABLED": "0"}
    space = tmp_path / "ablation4.yaml"
    text = (REPO / "search_spaces" / "ablation.yaml").read_text()
    space.write_text(text.replace("  smoke: {epochs: 2,", "  smoke: {base_seeds: 4, epochs: 2,"))
    args = [sys.executable, "-m", "tune.run", "--space", str(space), *SMOKE, "--scheduler", "fifo",
            "--storage", str(tmp_path), "--name", "killed", "--num-cpus", "2"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    exp = tmp_path / "killed"
    deadline = time.time() + 150
    try:
        while time.time() < deadline:
            done = sum(1 for rows in trial_results(exp).values() if len(rows) == 2) if exp.exists() else 0
            if done >= 4:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        kill_session(proc.pid)
        proc.wait()
    before = trial_results(exp)
    assert 0 < sum(1 for rows in before.values() if len(rows) == 2) < 20

    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Token authentication is enabled" not in resumed.stdout + resumed.stderr  # Ray's notice on every run
    after = trial_results(exp)
    assert len(after) == 20
    assert_complete(after, {2})
    for name, rows in before.items():  # nothing recorded before the kill was lost or changed
        if len(rows) == 2:
            assert after[name] == rows, name  # a finished seed is not run again
        else:  # a seed killed before its partner's checkpoint of that epoch trains it again: the same numbers
            assert untimed(after[name][: len(rows)]) == untimed(rows), name
    params = [json.loads((exp / name / "params.json").read_text()) for name in after]
    seeds = sorted((p["design_point"]["label"], p["seed"]) for p in params)
    assert len(set(seeds)) == 20 and sorted(s for label, s in seeds if label == "base") == [0, 1, 2, 3]
    ledger = json.loads((exp / "groups.json").read_text())["groups"]
    assert {f"{name}/seed-{s}" for name, g in ledger.items() for s in g["seeds"]} == set(after)
    assert len(ledger) == 9 and {g["status"] for g in ledger.values()} == {"terminated"}
    assert ledger["w1-000_base_s0-3"]["seeds"] == [0, 1, 2, 3]
    # The summary's best trial is the best seeds' mean over every trial, those that ended before the kill too.
    groups: dict[str, list[list[dict]]] = {}
    for name, rows in after.items():
        groups.setdefault(name.split("/")[0], []).append(rows)
    best = max(sum(rows[e]["val_acc"] for rows in g) / len(g) for g in groups.values() for e in range(2))
    summary = re.search(r"^best trial: val_acc (0\.\d{4}), its seeds' mean", resumed.stdout, re.M)
    assert summary and abs(float(summary.group(1)) - best) <= 5e-5 + 1e-9, (summary, best)


def test_existing_cluster_through_address(data_root, tmp_path):
    """A cluster started by `ray start --head` with token authentication (Ray's default): Ray does not
    send its token to an explicit HOST:PORT by itself, so the runner must, and then runs the smoke
    ablation on that cluster (warning that a local --storage is not shared with other nodes)."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env |= {"CNNSEARCH_DATA_DIR": str(data_root), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_TOKEN_PATH": str(token)}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The venv's own `ray`, beside this interpreter: the suite runs from a venv that is not activated.
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
                             "false", "--block"], env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and head.poll() is None, "the head node did not start"
                time.sleep(0.5)
        run = subprocess.run([sys.executable, "-m", "tune.run", "--space", "ablation", *SMOKE, "--scheduler", "fifo",
                              "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path), "--name", "remote"],
                             env=env, capture_output=True, text=True, timeout=300)
        # Without --address Ray joins the running cluster, which then cannot take a new cluster's resources.
        local = subprocess.run([sys.executable, "-m", "tune.run", "--space", "ablation", *SMOKE, "--num-cpus", "2",
                                "--storage", str(tmp_path), "--name", "local"], env=env, capture_output=True, text=True,
                               timeout=120)
    finally:
        kill_session(head.pid)
        head.wait()
        # SIGKILL leaves `ray start`'s pointer to the cluster behind; ray.init() would then try to join it.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
    assert local.returncode == 2 and local.stderr.strip().splitlines()[-1].startswith("python -m tune.run: error: ")
    assert "already running here" in local.stderr and "Traceback" not in local.stderr
    assert run.returncode == 0, run.stderr[-2000:]
    assert "is a local path" in run.stdout + run.stderr
    results = trial_results(tmp_path / "remote")
    assert len(results) == 18 and len(tune_results(tmp_path / "remote")) == 9
    assert_complete(results, {2})


@pytest.mark.parametrize("args, message", [
    (["--space", "nosuch"], "ablation"),
    (["--space", "ablation", "--budget", "huge"], "invalid choice"),
    (["--space", "ablation", "--gpus-per-trial", "-1"], "--gpus-per-trial must be >= 0"),
    (["--space", "ablation", "--gpus-per-trial", "1.5"], "whole number"),
    (["--space", "ablation", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    (["--space", "ablation", "--max-concurrent", "0"], "--max-concurrent must be >= 1"),
    (["--space", "ablation", "--resume"], "--resume needs --name"),
    (["--space", "ablation", "--search", "optuna"], "design: sample"),
    (["--space", "search", "--search", "grid"], "random or optuna"),
    (["--space", "ablation", "--dataset", "svhn", "--dry-run"], "svhn"),
    (["--space", "ablation", "--scheduler", "asha", "--grace-period", "50", "--budget", "smoke"], "exceeds"),
    (["--space", "ablation", "--address", "auto", "--num-gpus", "1"], "existing cluster"),
    (["--space", "ablation", "--address", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
    (["--space", "ablation", "--address", "ray://127.0.0.1:1"], "ray start --head"),
    (["--space", "ablation", "--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number, got nan"),
    (["--space", "ablation", "--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite number"),
    (["--space", "ablation", "--num-gpus=-inf"], "--num-gpus must be a finite number"),
    (["--space", "ablation", "--max-failures", "-5"], "--max-failures must be >= 0"),
    (["--space", "ablation", "--scheduler", "fifo", "--grace-period", "1"], "not a setting of --scheduler fifo"),
    (["--space", "ablation", "--scheduler", "hyperband", "--grace-period", "1"], "use --scheduler asha"),
    (["--space", "ablation", "--scheduler", "asha", "--reduction-factor", "1"], "--reduction-factor must be an integer >= 2"),
    (["--space", "ablation", "--grace-period", "1"], "not a setting of --scheduler fifo"),  # the space's default
    (["--space", "ablation", "--scheduler", "pbt"], "invalid choice"),
    (["--space", "ablation", "--mps", "--address", "auto"], "on each node before `ray start`"),
    (["--space", "ablation", "--fuse", "two"], "invalid choice"),
    (["--space", "ablation", "--fuse", "4"], "invalid choice"),
    (["--space", "ablation", "--max-seeds", "8"], "add --until-decided"),
    (["--space", "ablation", "--until-decided", "--max-seeds", "0"], "--max-seeds must be an integer in [1, 1000]"),
    (["--space", "ablation", "--until-decided", "--max-seeds", "3", "--budget", "cpu"], "below the 4 seeds"),
    (["--space", "ablation", "--until-decided", "--scheduler", "asha"], "use --scheduler fifo"),
    (["--space", "search", "--until-decided"], "a sampled design has none"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


@pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is not None, reason="this machine has MPS")
def test_mps_without_the_driver_daemon_is_one_line_exit_2(data_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tune.run", "--space", "ablation", *SMOKE, "--mps", "--num-gpus", "1",
                           "--storage", str(tmp_path), "--data-dir", str(data_root)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "nvidia-cuda-mps-control is not on PATH" in err and "run without --mps" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_existing_experiment_is_not_overwritten(tmp_path, capsys):
    exp = tmp_path / "taken"
    exp.mkdir()
    (exp / "keep.txt").write_text("results")
    with pytest.raises(SystemExit) as exit_info:
        main(["--space", "ablation", *SMOKE, "--storage", str(tmp_path), "--name", "taken"])
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err
    assert (exp / "keep.txt").read_text() == "results"


def test_dry_run_checks_the_data_and_estimates_the_time(data_root, tmp_path, capsys):
    assert main(["--space", "ablation", "--budget", "cpu", "--dry-run", "--num-cpus", "2", "--data-dir",
                 str(data_root)]) == 0
    out = capsys.readouterr().out
    assert f"data: cifar10 found in {data_root} (cifar10-jpeg)" in out
    # 9 points (2 more seeds on the base point): 20 seed runs of 8 epochs; ASHA stops whole trials, seeds and all
    assert re.search(r"^estimated time: \d+ min at most \(160 epochs, 2 at once\); speeds: this project's 2-core CPU",
                     out, re.M)  # FIFO, the space's default: every trial runs to its end
    assert main(["--space", "ablation", "--budget", "cpu", "--scheduler", "asha", "--dry-run", "--num-cpus", "2",
                 "--data-dir", str(data_root)]) == 0
    assert re.search(r"^estimated time: \d+ min at most \(160 epochs, 2 at once\); about \d+ min if the scheduler "
                     r"stops trials at its rungs \(~71 epochs\); speeds: this project's 2-core CPU",
                     capsys.readouterr().out, re.M)
    # Missing data: downloaded by the run when allowed, else the dry run fails as the run would.
    assert main(["--space", "ablation", "--dry-run", "--data-dir", str(tmp_path)]) == 0
    assert f"data: cifar10 is not in {tmp_path} yet: the run downloads it there first" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--space", "ablation", "--dry-run", "--no-download", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"cifar10 not found: looked for {tmp_path / 'cifar-10-batches-py/'}" in err


@pytest.mark.parametrize("value, message", [("", "CNNSEARCH_DATA_DIR is set but empty"), (__file__, "is not a folder")])
def test_bad_data_dir_variable_is_one_line_exit_2(value, message, monkeypatch, capsys):
    """`export CNNSEARCH_DATA_DIR=$(unpack.sh ...)` exports "" when unpacking fails: an error, never a
    silent fall back to another folder."""
    monkeypatch.setenv("CNNSEARCH_DATA_DIR", value)
    with pytest.raises(SystemExit) as exit_info:
        main(["--space", "ablation", "--dry-run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_dry_run_lists_every_trial(capsys):
    """One line per trial: a design point with all its seeds, in the plan's order."""
    assert main(["--space", "ablation", "--budget", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    trials = re.findall(r"^\s*(\d+)\. (\S+) seeds ([\d, ]+?)(?::|$)", out, flags=re.MULTILINE)
    assert [int(n) for n, _, _ in trials] == list(range(1, 10))
    assert {seeds for _, _, seeds in trials} == {"0, 1"}
    assert "9 trial(s)" in out and "18 seed run(s)" in out and "36 epochs in total at most" in out
    assert re.search(r"^\s*1\. base seeds 0, 1$", out, flags=re.MULTILINE)
    assert re.search(r"^\s*2\. stem_kernel=7 seeds 0, 1: stem_kernel=7$", out, flags=re.MULTILINE)
    assert [label for _, label, _ in trials if label.startswith("stem_kernel")] == ["stem_kernel=7"]


@pytest.mark.parametrize("changes, message", [
    ({"gpus_per_trial": float("nan")}, "--gpus-per-trial must be a finite number, got nan"),
    ({"gpus_per_trial": 1.5}, "whole number"),
    ({"cpus_per_trial": 0}, "--cpus-per-trial must be > 0"),
    ({"num_cpus": True}, "--num-cpus must be an integer"),
    ({"max_concurrent": 0}, "--max-concurrent must be >= 1"),
    ({"resume": True}, "--resume needs --name"),
    ({"address": "auto", "num_cpus": 2}, "existing cluster"),
    ({"fuse": "two"}, "--fuse must be one of auto, on, off"),
    ({"fuse": 4}, "--fuse must be one of auto, on, off"),
])
def test_run_options_reject_values_out_of_range(changes, message):
    with pytest.raises(RunError, match=message) as info:
        RunOptions(**changes)
    assert "\n" not in str(info.value)


def test_scheduler_choices_come_from_the_registry():
    from tune.run import build_parser

    action = next(a for a in build_parser()._actions if a.dest == "scheduler")
    assert tuple(action.choices) == tuple(SCHEDULERS) and "hyperband" in SCHEDULERS


@pytest.mark.parametrize("options, cluster_gpus, cuda_graph, expected", [
    ({}, 0, True, 0.0),  # no GPUs: none per trial
    ({}, 1, True, 1.0),  # CUDA-graph steps without MPS only take turns on a shared GPU: one trial per card
    ({"mps": True}, 1, True, 0.25),  # under MPS four run at once
    ({}, 1, False, 0.25),  # eager steps leave the GPU idle between launches: sharing pays without MPS
    ({"gpus_per_trial": 0.5}, 0, True, 0.5),  # as given
    ({"fuse": "on"}, 1, True, 1.0),  # a trial's fused seeds are one network: the share of one trial
    ({"fuse": "on"}, 0, True, 0.0),
    ({"fuse": "on", "gpus_per_trial": 0.5}, 1, True, 0.5),
])
def test_default_gpus_per_trial_follows_the_measured_table(options, cluster_gpus, cuda_graph, expected):
    assert RunOptions(**options).trial_gpus(cluster_gpus, cuda_graph=cuda_graph) == expected


@pytest.mark.parametrize("fuse, trial_gpus, expected", [
    ("auto", 0.0, False),  # on a CPU fusing does not pay (bench/RESULTS.md)
    ("auto", 0.25, None),  # a GPU share: the trial fuses if its device is a GPU (logical GPUs train on the CPU)
    ("auto", 1.0, None),
    ("on", 0.0, True),
    ("off", 1.0, False),
])
def test_fuse_auto_fuses_the_seeds_of_trials_with_a_gpu(fuse, trial_gpus, expected):
    assert RunOptions(fuse=fuse).fused(trial_gpus) is expected


def test_fuse_follows_what_fused_seeds_cannot_do(tmp_path):
    """A compiled or channels-last plan: auto trains its seeds one after another even with a GPU; on is refused."""
    one = (DATA / "one_trial.yaml").read_text()
    (tmp_path / "cl.yaml").write_text(one.replace("base: {", "base: {channels_last: true, "))
    (tmp_path / "compiled.yaml").write_text(one.replace("dropout: {levels: [0.0]}", "compile: {levels: [false, true]}"))
    assert Plan(load_space(DATA / "one_trial.yaml"), "smoke").unfusable is None
    assert Plan(load_space(tmp_path / "cl.yaml"), "smoke").unfusable == "channels_last"
    assert Plan(load_space(tmp_path / "compiled.yaml"), "smoke").unfusable == "compile"
    assert RunOptions(fuse="auto").fused(1.0, "compile") is False
    assert RunOptions(fuse="off").fused(1.0, "compile") is False
    with pytest.raises(RunError, match="cannot use channels_last: set channels_last: false"):
        RunOptions(fuse="on").fused(1.0, "channels_last")
