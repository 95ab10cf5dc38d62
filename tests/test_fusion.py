"""Trials fused on their GPU under Tune (`tune.run --fuse N`, tune/fusion.py), on a real local Ray cluster
(2 CPUs, 1 logical GPU, so 4 trials share it) at the smoke budget on real CIFAR-10."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from search_spaces import load_space
from tune import Plan
from tune.run import main

from test_tune import DATA, SMOKE, trial_results

FUSED = ["--space", str(DATA / "fused_trials.yaml"), *SMOKE, "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5",
         "--fuse", "4"]


@pytest.fixture(scope="module")
def inject_dir(tmp_path_factory) -> Path:
    """Fault injection is armed while this folder exists (see tune/faults.py)."""
    return tmp_path_factory.mktemp("inject") / "armed"


@pytest.fixture(scope="module")
def ray_cluster(data_root, inject_dir):
    """Workers inherit the environment at the cluster's start, so the fault-injection variable is set before."""
    import ray

    os.environ["CNNSEARCH_DATA_DIR"] = str(data_root)
    os.environ["CNNSEARCH_INJECT_FAILURE"] = f"1:{inject_dir}"
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _by_trial(exp: Path) -> dict[tuple, list[dict]]:
    """Each trial's rows, keyed by what it trains: (lr, dropout, seed)."""
    out = {}
    for name, rows in trial_results(exp).items():
        params = json.loads((exp / name / "params.json").read_text())
        out[(params["lr"], params["dropout"], params["seed"])] = rows
    return out


@pytest.fixture(scope="module")
def fused_run(ray_cluster, tmp_path_factory):
    """The eight trials with --fuse 4 under ASHA: (exit code, rows by trial)."""
    storage = tmp_path_factory.mktemp("fused")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main([*FUSED, "--scheduler", "asha", "--storage", str(storage), "--name", "asha"])
    return code, _by_trial(storage / "asha")


def test_trials_of_one_network_train_fused_four_to_a_gpu(fused_run):
    """Every trial reports its epochs in order, none errors: the two networks (dropout 0 and 0.1) never share a
    group (fit_fused would refuse it, and the trial would error). The first four trials Tune starts are one
    network's, fused 4 to the GPU: the plan's order has the seeds of a point apart, so without --fuse's reordering
    they would be two networks' groups of 2."""
    code, rows = fused_run
    assert code == 0 and len(rows) == 8
    for key, trial in rows.items():
        assert [r["epoch"] for r in trial] == list(range(1, len(trial) + 1)), key
    first = sorted(rows, key=lambda k: rows[k][0]["started_at"])[:4]
    assert {k[1] for k in first} == {0.0} and all(rows[k][0]["fused"] == 4 for k in first)


def test_asha_stops_fused_trials_one_by_one_and_the_others_go_on(fused_run):
    """ASHA stops trials of a group on their own; the engine drops them (the group's `fused` count falls) and
    the others go on from that epoch's checkpoints."""
    _, rows = fused_run
    lengths = {k: len(v) for k, v in rows.items()}
    assert min(lengths.values()) < 4 and max(lengths.values()) == 4, lengths  # ASHA stopped some, not all
    assert any(r["fused"] < 4 for trial in rows.values() for r in trial[1:]), "no group went on without its stopped"


def test_fused_trials_train_as_fit_fused_does(fused_run, cifar10):
    """What a trial of the first group reports, before and after ASHA stopped others of its group, is what
    `fit_fused` computes for the four in one process, uninterrupted (same thread count as the engine's: the
    members' CPUs, 4 x 0.5). Checked for the network without dropout: dropout masks come from the group's one
    stream, so with dropout a trial's masks depend on which trials share its group, which ASHA changes."""
    import torch

    from cnnsearch.config import TrainConfig
    from cnnsearch.fused import fit_fused
    from search_spaces import trial_config

    _, rows = fused_run
    plan = Plan(load_space(str(DATA / "fused_trials.yaml")), "smoke")
    keys = [k for k in rows if k[1] == 0.0]
    configs = [TrainConfig.from_dict(trial_config({**plan.param_space(), "lr": lr, "dropout": dropout, "seed": seed}))
               for lr, dropout, seed in keys]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = fit_fused(configs, cifar10, device="cpu")
    finally:
        torch.set_num_threads(threads)
    for key, result in zip(keys, results):
        assert len(rows[key]) <= len(result.history)
        for reported, expected in zip(rows[key], result.history):
            for metric in ("train_loss", "val_loss", "val_acc"):
                assert reported[metric] == pytest.approx(expected[metric], rel=1e-5, abs=1e-6), (key, metric)


def test_failed_members_are_retried_from_their_checkpoints_and_train_on_fused(fused_run, inject_dir, tmp_path):
    """Every trial of one network raises after reporting epoch 1; Tune retries each from that checkpoint, the
    retried trials fuse again (at epoch 1) and train on as if nothing had happened."""
    space = tmp_path / "four.yaml"
    space.write_text((DATA / "fused_trials.yaml").read_text().replace("levels: [0.0, 0.1]", "levels: [0.0]"))
    inject_dir.mkdir()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = main([*FUSED[:1], str(space), *FUSED[2:], "--scheduler", "fifo", "--storage", str(tmp_path),
                         "--name", "retry"])
    finally:
        failures = list(inject_dir.glob("failed-*"))
        for marker in failures:
            marker.unlink()
        inject_dir.rmdir()
    assert code == 0 and len(failures) == 4  # each failed once, and each finished
    rows = _by_trial(tmp_path / "retry")
    _, uninterrupted = fused_run
    assert len(rows) == 4
    for key, trial in rows.items():
        assert [r["epoch"] for r in trial] == [1, 2, 3, 4], key
        assert trial[-1]["fused"] == 4  # together again after the retry
        for reported, expected in zip(trial, uninterrupted[key]):
            for metric in ("train_loss", "val_loss", "val_acc"):
                assert reported[metric] == pytest.approx(expected[metric], rel=1e-5, abs=1e-6), (key, metric)


# ------------------------------------------------------------------------------- the coordinator alone
@pytest.fixture(scope="module")
def coordinator(ray_cluster, cifar10):
    """One coordinator for the tests below (each uses its own member ids and keys; an engine a test leaves idle
    trains the next test's group)."""
    from tune.fusion import start_coordinator

    return start_coordinator(cifar10)


def _member(trial_id: str, **changes) -> dict:
    from cnnsearch.config import TrainConfig

    config = TrainConfig(model="basecnn", dataset="cifar10", epochs=2, train_subset=100, val_size=100, batch_size=50,
                         **changes)
    return {"trial_id": trial_id, "config": config.to_dict(), "checkpoint": None}


def _placement() -> dict:
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "gpus": [], "gpu_share": 0.0, "cpus": 1.0}


def test_a_lone_member_trains_alone_after_the_wait_a_leaver_is_dropped_a_restored_one_resumes(coordinator):
    """A group that does not fill up starts when its wait ends; a member that left before it started is not
    trained; a member restored from a checkpoint goes on from it exactly."""
    import ray

    for trial_id, seed in (("lone-a", 0), ("lone-b", 1)):
        ray.get(coordinator.join.remote(trial_id, "lone", 4, 1.0, _member(trial_id, seed=seed), _placement()))
    ray.get(coordinator.leave.remote("lone-b"))
    first = ray.get(coordinator.next.remote("lone-a"), timeout=120)
    second = ray.get(coordinator.next.remote("lone-a"), timeout=120)
    assert [first["metrics"]["epoch"], second["metrics"]["epoch"]] == [1, 2]
    assert first["metrics"]["fused"] == 1 and second["metrics"]["status"] == "completed"
    assert first["checkpoint"][:2] == b"PK"  # a torch checkpoint (a zip), as save_checkpoint writes it
    # A trial restored from epoch 1's checkpoint (a retry, --resume) trains epoch 2 as the uninterrupted run did,
    # in the engine the first group left idle.
    restored = {**_member("lone-c", seed=0), "checkpoint": first["checkpoint"]}
    ray.get(coordinator.join.remote("lone-c", "lone at epoch 1", 1, 1.0, restored, _placement()))
    again = ray.get(coordinator.next.remote("lone-c"), timeout=120)
    assert again["metrics"]["epoch"] == 2
    for metric in ("train_loss", "val_loss", "val_acc"):
        assert again["metrics"][metric] == second["metrics"][metric]


def test_an_engine_that_fails_fails_every_member(coordinator):
    """Fused training refuses channels_last; both members hear the engine's error (their trials then error and
    Tune retries them), neither waits for ever."""
    import ray

    for trial_id, seed in (("fail-a", 0), ("fail-b", 1)):
        ray.get(coordinator.join.remote(trial_id, "fail", 2, 60.0, _member(trial_id, seed=seed, channels_last=True),
                                        _placement()))
    for item in ray.get([coordinator.next.remote("fail-a"), coordinator.next.remote("fail-b")], timeout=120):
        assert "channels_last" in item["error"]


def test_the_same_trial_twice_trains_in_two_groups(coordinator):
    """A repeated draw (the same config twice) cannot be stacked with itself: the second opens a group of its own."""
    import ray

    groups = [ray.get(coordinator.join.remote(t, "twice", 4, 0.5, _member(t, seed=0), _placement()))
              for t in ("twice-a", "twice-b")]
    assert groups[0] != groups[1]
    items = ray.get([coordinator.next.remote("twice-a"), coordinator.next.remote("twice-b")], timeout=120)
    assert [i["metrics"]["fused"] for i in items] == [1, 1]
    assert items[0]["metrics"]["train_loss"] == items[1]["metrics"]["train_loss"]  # the same training


def test_a_lagging_member_keeps_every_epoch_but_only_the_newest_checkpoint():
    from tune.fusion import _Mailbox

    async def scenario():
        box = _Mailbox()
        for epoch in (1, 2, 3):
            box.put({"metrics": {"epoch": epoch}, "checkpoint": b"state%d" % epoch})
        return [await box.get() for _ in range(3)]

    items = asyncio.run(scenario())
    assert [i["metrics"]["epoch"] for i in items] == [1, 2, 3]
    assert [i["checkpoint"] for i in items] == [None, None, b"state3"]


# ------------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("space", ["ablation", "optimizers", "architectures"])
def test_fuse_orders_the_trials_so_those_that_can_fuse_start_together(space):
    """--fuse reorders a fixed design's trials (the same trials) so each network's trials are adjacent."""
    from search_spaces import trial_config
    from tune.experiment import _searcher
    from tune.fusion import fuse_key

    plan = Plan(load_space(space), "smoke")
    params = _searcher(plan, fuse=True).params
    assert sorted(map(json.dumps, params)) == sorted(map(json.dumps, plan.trial_params()))
    keys = [fuse_key(trial_config({**plan.param_space(), **p})) for p in params]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys)), "a network's trials are split"
    assert _searcher(plan).params == plan.trial_params()  # without --fuse, the plan's order


@pytest.mark.parametrize("args, message", [
    (["--fuse", "1"], "--fuse must be >= 2, got 1"),
    (["--fuse", "65"], "--fuse must be <= 64"),
    (["--fuse", "two"], "invalid int value"),
    (["--fuse", "4", "--gpus-per-trial", "1"], "use --gpus-per-trial 0.25 (1/N)"),
])
def test_bad_fuse_values_are_one_line_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--space", "ablation", *SMOKE, *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("fuse, gpus, concurrent, expected", [
    (4, 0.25, 8, 4), (4, 0.5, 8, 2), (8, 0.25, 16, 4), (4, 1 / 3, 6, 3),  # no more than share a GPU
    (4, 0.0, 2, 2), (4, 0.0, 16, 4),  # without GPUs: no more than run at once
    (4, 0.25, 1, 1),
])
def test_a_group_holds_no_more_than_can_run_beside_each_other(fuse, gpus, concurrent, expected):
    from tune.fusion import fused_capacity

    assert fused_capacity(fuse, gpus, concurrent) == expected


def test_fuse_refuses_a_compiled_space_before_anything_starts(tmp_path, capsys):
    space = (DATA / "fused_trials.yaml").read_text().replace("lr_schedule: none}", "lr_schedule: none, compile: true}")
    path = tmp_path / "compiled.yaml"
    path.write_text(space)
    with pytest.raises(SystemExit) as exit_info:
        main(["--space", str(path), *SMOKE, "--fuse", "4", "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--fuse" in err and "compile: false" in err
    assert not (tmp_path / "runs").exists()
