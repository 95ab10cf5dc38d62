"""`python -m cnnsearch.train`: real end-to-end runs, and every bad input is one line with exit code 2."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from cnnsearch.train import main

TINY_ARGS = ["--arch", "lenet5", "--dataset", "mnist", "--train-subset", "10", "--val-size", "100",
             "--batch-size", "50", "--lr-schedule", "none", "--device", "cpu", "--quiet", "--no-download"]


def run_cli(*args: str, env_data: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNNSEARCH_DATA_DIR": env_data}
    return subprocess.run([sys.executable, "-m", "cnnsearch.train", *args], capture_output=True, text=True, env=env, timeout=300)


def test_end_to_end_writes_outputs_and_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*TINY_ARGS, "--epochs", "2", "--out", str(out), env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("Epoch ")]
    assert len(lines) == 2
    assert re.match(r"Epoch 1/2, Train Loss: \d+\.\d{4}, Train Accuracy: \d+\.\d{2}%, Valid Loss: \d+\.\d{4}, "
                    r"Valid Accuracy: \d+\.\d{2}%, LR: .*, Time: \d+\.\ds", lines[0])
    for name in ("config.json", "metrics.csv", "metrics.json", "curves.png", "confusion.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert len(metrics["test"]["confusion"]) == 10 and sum(map(sum, metrics["test"]["confusion"])) == 10_000
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["model"] == "lenet5" and config["model"]["params"] > 0

    # Re-using the folder without --resume is refused and leaves it as it was.
    before = (out / "metrics.json").read_bytes()
    proc = run_cli(*TINY_ARGS, "--epochs", "2", "--out", str(out), env_data=str(data_root))
    assert proc.returncode == 2 and "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "metrics.json").read_bytes() == before

    # --resume with more epochs continues from epoch 3.
    proc = run_cli(*TINY_ARGS, "--epochs", "3", "--out", str(out), "--resume", env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    assert [l.split(",")[0] for l in proc.stdout.splitlines() if l.startswith("Epoch ")] == ["Epoch 3/3"]
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2, 3]


def test_seeds_train_fused_into_a_folder_each_and_resume(data_root, tmp_path):
    """--seeds 3,4: one folder per seed with every file a single run writes, each seed trained as --seed N
    trains it (to float rounding: cnnsearch/fused.py), a summary, and --resume continues every seed."""
    out = tmp_path / "seeds"
    proc = run_cli(*TINY_ARGS, "--epochs", "2", "--seeds", "3,4", "--out", str(out), env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    assert [l.split(",")[0] for l in proc.stdout.splitlines() if ": Epoch " in l] == [
        "seed 3: Epoch 1/2", "seed 4: Epoch 1/2", "seed 3: Epoch 2/2", "seed 4: Epoch 2/2"]
    assert "test acc over 2 seeds: mean" in proc.stdout
    for seed in (3, 4):
        for name in ("config.json", "metrics.csv", "metrics.json", "curves.png", "confusion.png", "checkpoint.pt"):
            assert (out / f"seed-{seed}" / name).stat().st_size > 0, (seed, name)
        assert json.loads((out / f"seed-{seed}" / "config.json").read_text())["config"]["seed"] == seed
    summary = json.loads((out / "summary.json").read_text())["seeds"]
    assert [s["seed"] for s in summary] == [3, 4] and all(0 <= s["test_acc"] <= 1 for s in summary)

    alone = tmp_path / "alone"
    proc = run_cli(*TINY_ARGS, "--epochs", "2", "--seed", "4", "--out", str(alone), env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    fused = json.loads((out / "seed-4" / "metrics.json").read_text())
    single = json.loads((alone / "metrics.json").read_text())
    for a, b in zip(fused["epochs"], single["epochs"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
    assert fused["test"]["loss"] == pytest.approx(single["test"]["loss"], abs=1e-4)

    proc = run_cli(*TINY_ARGS, "--epochs", "3", "--seeds", "3,4", "--out", str(out), "--resume",
                   env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    assert [l.split(",")[0] for l in proc.stdout.splitlines() if ": Epoch " in l] == [
        "seed 3: Epoch 3/3", "seed 4: Epoch 3/3"]
    for seed in (3, 4):
        assert [e["epoch"] for e in json.loads((out / f"seed-{seed}" / "metrics.json").read_text())["epochs"]] == [1, 2, 3]
    # A seed the run did not train has nothing to resume.
    proc = run_cli(*TINY_ARGS, "--epochs", "4", "--seeds", "3,5", "--out", str(out), "--resume",
                   env_data=str(data_root))
    assert proc.returncode == 2 and "no seed-5/checkpoint.pt in" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_bar_shows_the_loss_and_the_images_used(data_root, tmp_path):
    """The first line counts the images training really uses (not the data set's), and the progress bar
    (on stderr, without --quiet) shows the running loss and accuracy."""
    args = [a for a in TINY_ARGS if a != "--quiet"]
    proc = run_cli(*args, "--epochs", "1", "--out", str(tmp_path / "run"), env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("lenet5 on mnist: 100 train / 100 validation images (of 60000 in its training "
                                  "split) / 10000 test, 10 classes")
    assert re.search(r"2/2 \[.*loss=\d\.\d{4}, acc=\d+\.\d%\]", proc.stderr.replace("\r", "\n")), proc.stderr
    # With --seeds the bar shows the seeds' mean loss and accuracy, per seed's images (an accuracy over 100%
    # would mean it counted the seeds' images together).
    proc = run_cli(*args, "--epochs", "1", "--seeds", "0,1,2", "--out", str(tmp_path / "seeds"), env_data=str(data_root))
    assert proc.returncode == 0, proc.stderr
    bars = re.findall(r"2/2 \[.*loss=(\d\.\d{4}), acc=(\d+\.\d)%\]", proc.stderr.replace("\r", "\n"))
    assert bars and all(0 <= float(acc) <= 100 and 1 < float(loss) < 4 for loss, acc in bars), proc.stderr


def test_curves_have_whole_epoch_ticks(tmp_path):
    from cnnsearch.plots import plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.1 * e, "val_acc": 0.09 * e}
               for e in (1, 2, 3)]
    fig = plot_curves(history, tmp_path / "curves.png", title="t")
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--lr", "abc"], "invalid float value"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--arch", "resnet19"], "resnet18"),
    (["--arch", "basecnn", "--stem-kernel", "7"], "stem_kernel"),
    (["--blocks-per-stage", "2,x"], "comma-separated integers"),
    (["--dataset", "svhn"], "dataset must be one of cifar10"),
    (["--resume"], "--resume needs --out"),
    (["--config", "/nonexistent/config.yaml"], "cannot read config file"),
    (["--seeds", "0,x"], "comma-separated integers"),
    (["--seeds", "0,1,0"], "--seeds must differ"),
    (["--seeds", "0,-1"], "seed must be in [0"),
    (["--seed", "1", "--seeds", "0,1"], "pass --seed or --seeds, not both"),
    (["--seeds", "0,1", "--compile"], "--seeds trains without --compile"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CNNSEARCH_DATA_DIR", str(data_root))
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "x"), "--no-download"] if "--resume" not in args else args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_missing_data_offline_names_paths(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"), "--no-download",
              "--out", str(tmp_path / "o"), "--arch", "basecnn"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "empty") in err


def test_config_file_reads_exponent_floats_and_flags_override(tmp_path):
    """`lr: 1e-3` is a number (plain YAML 1.1 would read a string) and a flag beats the file."""
    from cnnsearch.train import build_parser, config_from_args

    path = tmp_path / "run.yaml"
    path.write_text("model: lenet5\ndataset: mnist\nlr: 1e-3\nweight_decay: 5e-4\nepochs: 3\n")
    config = config_from_args(build_parser().parse_args(["--config", str(path), "--epochs", "1"]))
    assert (config.model, config.lr, config.weight_decay, config.epochs) == ("lenet5", 1e-3, 5e-4, 1)
    path.write_text("lr: 1e-3\nlr: 2e-3\n")
    with pytest.raises(ValueError, match="duplicate key 'lr'"):
        config_from_args(build_parser().parse_args(["--config", str(path)]))


def test_every_config_field_has_a_flag_or_is_named_config_file_only():
    import dataclasses

    from cnnsearch.config import TrainConfig
    from cnnsearch.train import _NOT_CONFIG, _RENAMED, CONFIG_FILE_ONLY, build_parser

    flags = {_RENAMED.get(a.dest, a.dest) for a in build_parser()._actions} - _NOT_CONFIG - {"help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert flags <= fields, f"flags that set no TrainConfig field: {sorted(flags - fields)}"
    assert fields - flags == set(CONFIG_FILE_ONLY), f"fields without a flag: {sorted(fields - flags - set(CONFIG_FILE_ONLY))}"


def test_split_seed_and_eval_batch_size_flags():
    from cnnsearch.train import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--split-seed", "3", "--eval-batch-size", "256"]))
    assert (config.split_seed, config.eval_batch_size) == (3, 256)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_waits_for_the_checkpoints_being_written(signum):
    """Fused seeds resume only from one epoch, so the CLI writes an epoch's checkpoints under signals_held:
    a Ctrl-C (or SIGTERM) that comes meanwhile stops the run after the last of them, not between two."""
    from cnnsearch.cli import Interrupt, signals_held, stop_on_signals

    written = []
    with pytest.raises(Interrupt) as stop, stop_on_signals():
        with signals_held():
            written.append("seed 0")
            os.kill(os.getpid(), signum)
            written.append("seed 1")  # still reached: the signal waits
        written.append("after")  # not reached: it lands as the block ends
    assert written == ["seed 0", "seed 1"] and stop.value.code == 128 + signum
