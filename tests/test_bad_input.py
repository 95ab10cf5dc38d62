"""Bad input and faults, as a hostile or unlucky user meets them, through the three commands.

`CASES` is the table: one row per case (command, arguments, a fragment of the one-line error, exit code),
run in-process through each command's `main`. Paths in braces ({tmp}, {bomb}, ...) are made by the
`inputs` fixture. The tests after the table need a real Ray run, signals or a full disk, and run the
commands as subprocesses: a race for one experiment name, Ctrl-C and --resume, pickles planted in an
experiment folder and a damaged ledger or record, SIGTERM of training, a full disk while checkpointing, a
truncated checkpoint in a report and Ctrl-C of the analysis.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SMOKE = ["--budget", "smoke", "--no-dashboard", "--no-download"]
TINY_TRAIN = ["--arch", "lenet5", "--dataset", "mnist", "--train-subset", "10", "--val-size", "100", "--batch-size",
              "50", "--lr-schedule", "none", "--device", "cpu", "--quiet", "--no-download"]
SECRET = "s3cr3t/K3Y"  # must never appear in a message


def _main(command: str):
    if command == "tune.run":
        from tune.run import main
    elif command == "cnnsearch.train":
        from cnnsearch.train import main
    else:
        from analysis.__main__ import main
    return main


CASES = [
    # -- experiment names are folder names
    ("tune.run", ["--space", "ablation", "--name", "../../x"], "--name must be a folder name", 2),
    ("tune.run", ["--space", "ablation", "--name", "a/b"], "--name must be a folder name", 2),
    ("tune.run", ["--space", "ablation", "--name", ".."], "--name must be a folder name", 2),
    # -- numbers finite and in range
    ("tune.run", ["--space", "ablation", "--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number", 2),
    ("tune.run", ["--space", "ablation", "--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite number", 2),
    ("tune.run", ["--space", "ablation", "--max-failures", "-5"], "--max-failures must be >= 0", 2),
    ("tune.run", ["--space", "search", "--num-samples", "0"], "--num-samples must be an integer >= 1", 2),
    ("tune.run", ["--space", "search", "--num-samples", "50000"], "above the most trials", 2),
    ("tune.run", ["--space", "search", "--seed", "-1"], "--seed must be an integer in [0, 4294967295]", 2),
    ("tune.run", ["--space", "search", "--seed", str(2**70)], "--seed must be an integer in [0, 4294967295]", 2),
    ("tune.run", ["--space", "ablation", "--num-gpus", "nan"], "--num-gpus must be a finite number", 2),
    ("tune.run", ["--space", "ablation", "--num-cpus", "100000000"], "--num-cpus must be <= 1,000,000", 2),
    ("cnnsearch.train", ["--seed", str(2**64)], "seed must be in [0, 4294967295]", 2),
    ("cnnsearch.train", ["--split-seed", "-3"], "split_seed must be in [0, 4294967295]", 2),
    ("cnnsearch.train", ["--width", "nan"], "width must be a finite number", 2),
    ("cnnsearch.train", ["--arch", "resnet18", "--width", "100"], "has 1.12e+11 parameters; at most 1e+10", 2),
    ("cnnsearch.train", ["--arch", "resnet18", "--width", "1e9"], "cannot be built", 2),
    ("cnnsearch.train", ["--lr", "inf"], "lr must be a finite number", 2),
    ("cnnsearch.train", ["--momentum", "nan"], "momentum must be a finite number", 2),
    ("cnnsearch.train", ["--dropout", "-0.5"], "dropout must be a number in [0, 1)", 2),
    ("cnnsearch.train", ["--epochs", "0"], "epochs must be >= 1", 2),
    # -- plans too large to run unasked, and grids too large to count by expanding them
    ("tune.run", ["--space", "search", "--budget", "smoke", "--num-samples", "5000"],
     "this plan runs 5,000 seed runs of up to 2 epochs (10,000 epochs at most); pass --yes", 2),
    ("tune.run", ["--space", "{million}", "--dry-run"], "1,000,000 design points (10 x 10 x 10 x 10 x 10 x 10 levels)", 2),
    # -- YAML that expands or nests without end
    ("tune.run", ["--space", "{bomb}"], "expands to over 100,000 values", 2),
    ("cnnsearch.train", ["--config", "{bomb}"], "expands to over 100,000 values", 2),
    ("cnnsearch.train", ["--config", "{deep}"], "nests too deeply", 2),
    ("cnnsearch.train", ["--config", "{binary}"], "is not a text file", 2),
    ("analysis", ["report", "{tmp}", "--claims", "{bomb}"], "expands to over 100,000 values", 2),
    # -- storage and output that cannot be written: refused before data or Ray
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{file}/runs"], "--storage: cannot create", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "/proc/cnnsearch"], "--storage: cannot create", 2),
    ("cnnsearch.train", [*TINY_TRAIN, "--out", "{file}/out"], "cannot write there", 2),
    ("cnnsearch.train", [*TINY_TRAIN, "--out", "/proc/cnnsearch"], "cannot write there", 2),
    # -- credentials in a storage URI are never echoed
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", f"s3://AKIA:{SECRET}@bucket/x?region=q&secret_key={SECRET}"],
     "--storage s3://***@bucket/x", 2),
    ("analysis", ["report", f"s3://AKIA:{SECRET}@bucket/x"], "s3://***@bucket/x", 2),
    # -- damaged records and folders that are not experiments
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "corrupt", "--resume"],
     "corrupt is not a cnnsearch experiment (cnnsearch.json is not JSON", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "cut_ledger", "--resume"],
     "cut_ledger: groups.json is damaged (", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "odd_ledger", "--resume"],
     "odd_ledger: groups.json is damaged (trial w1-000_dropout=0.0_s0 is not a ledger entry); it cannot be resumed", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "other_space", "--resume"],
     "other_space ran space ablation at budget smoke; pass --space ablation --budget smoke", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "other_base", "--resume"],
     "other_base ran with a different base, seeds, num_trials; resume with the flags and space file it ran with", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "record_only", "--resume", "--scheduler",
                  "fifo"], "ran with a different scheduler; resume with the flags and space file it ran with", 2),
    ("tune.run", ["--space", "{one}", *SMOKE, "--storage", "{tmp}", "--name", "record_only"], "already exists", 2),
    ("analysis", ["report", "{tmp}/corrupt"], "cnnsearch.json is not JSON", 2),
    ("analysis", ["best", "{tmp}/nothing_here"], "no such experiment folder", 2),
    # -- files that cannot be read as what they claim to be
    ("cnnsearch.train", ["--arch", "basecnn", "--dataset", "imagefolder:{images}", "--val-size", "2", "--device", "cpu",
                         "--quiet", "--out", "{tmp}/images_out"], "train/a/0.jpg: the file is empty (0 bytes)", 2),
    ("cnnsearch.train", [*TINY_TRAIN, "--out", "{truncated}", "--resume"], "cannot read checkpoint", 2),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """The files the table's rows name: hostile YAML, a file where a folder should be, images, records."""
    from search_spaces import load_space
    from tune import Plan

    tmp = tmp_path_factory.mktemp("bad_input")
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    (tmp / "bomb.yaml").write_text(laughs)  # nine lines, 9**9 strings once expanded
    (tmp / "deep.yaml").write_text("[" * 50_000 + "]" * 50_000)
    (tmp / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp / "file").write_text("a file where a folder should be")
    space = (DATA / "one_trial.yaml").read_text().replace("dropout: {levels: [0.0]}", "".join(
        f"\n  {key}: {{levels: [{', '.join(str(0.01 * (i + 1)) for i in range(10))}]}}"
        for key in ("dropout", "lr", "weight_decay", "label_smoothing", "momentum", "lr_decay")))
    (tmp / "million.yaml").write_text(space)
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "cnnsearch.json").write_text('{"format": 2, "space": {"fact')  # cut short
    plan = Plan(load_space(DATA / "one_trial.yaml"), "smoke")
    made = "python -m tune.run ... (written by the test)"
    for name in ("record_only", "cut_ledger", "odd_ledger"):
        plan.record(command=made).write(str(tmp / name))
    (tmp / "cut_ledger" / "groups.json").write_text('{"groups": {"w1-000_dropout=0.0_s0": {"wave": 1, "lab')
    (tmp / "odd_ledger" / "groups.json").write_text(json.dumps({"groups": {"w1-000_dropout=0.0_s0": {
        "wave": 1, "label": "dropout=0.0", "seeds": [0], "status": "finished, honest"}}, "looks": []}))
    # Records of other studies: another space, and this space's file with another base and two seeds.
    Plan(load_space("ablation"), "smoke").record(command=made).write(str(tmp / "other_space"))
    (tmp / "edited").mkdir()
    edited = (DATA / "one_trial.yaml").read_text().replace("lr: 0.001", "lr: 0.01")
    edited = edited.replace("seeds: [0]", "seeds: [0, 1]")
    (tmp / "edited" / "one_trial.yaml").write_text(edited)
    Plan(load_space(tmp / "edited" / "one_trial.yaml"), "smoke").record(command=made).write(str(tmp / "other_base"))
    _image_folder(tmp / "images")
    (tmp / "truncated").mkdir()
    (tmp / "truncated" / "checkpoint.pt").write_bytes(b"PK\x03\x04" + b"\0" * 40)  # a zip header, then nothing
    return {"tmp": str(tmp), "bomb": str(tmp / "bomb.yaml"), "deep": str(tmp / "deep.yaml"),
            "binary": str(tmp / "binary.yaml"), "file": str(tmp / "file"), "million": str(tmp / "million.yaml"),
            "one": str(DATA / "one_trial.yaml"), "images": str(tmp / "images"), "truncated": str(tmp / "truncated")}


def _image_folder(root: Path) -> None:
    """Two classes of 8x8 JPEGs per split; train/a/0.jpg is a zero-byte file."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / label / f"{i}.jpg")
    (root / "train" / "a" / "0.jpg").write_bytes(b"")


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its SHA-256: to show a refusal wrote and removed nothing."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, args, fragment, code", CASES, ids=[f"{c[0]}:{' '.join(c[1])[:60]}" for c in CASES])
def test_bad_input_is_one_line(command, args, fragment, code, inputs, capsys):
    args = [a.format(**inputs) for a in args]
    tmp = Path(inputs["tmp"])
    before = _tree(tmp)
    with pytest.raises(SystemExit) as exit_info:
        _main(command)(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    lines = err.strip().splitlines()  # progress lines (e.g. "decoding ...") may come before the error
    assert [line for line in lines if ": error: " in line] == lines[-1:] and lines[-1].startswith("python -m "), err
    assert fragment.format(**inputs) in lines[-1]
    assert SECRET not in err and "Traceback" not in err
    assert _tree(tmp) == before  # refused before anything was written (or left behind)


# ------------------------------------------------------------------------------- a real experiment
# No GPU per trial, whatever the machine: its seeds then train on the CPU with 1 thread, as `_alone` does.
RACE = ["--space", str(DATA / "uneven_trials.yaml"), *SMOKE, "--scheduler", "fifo", "--name", "race", "--num-cpus", "2",
        "--gpus-per-trial", "0"]
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def _tune(*args: str) -> list[str]:
    return [sys.executable, "-m", "tune.run", *args]


def _results(exp: Path) -> dict[str, list[dict]]:
    """Each seed's own rows (TRIAL/seed-N/result.json, one per epoch), by "TRIAL/seed-N"."""
    out = {}
    for path in sorted(exp.glob("*/seed-*/result.json")):
        out[f"{path.parent.parent.name}/{path.parent.name}"] = [json.loads(line) for line in
                                                                path.read_text().splitlines() if line.strip()]
    return out


def _ledger(exp: Path) -> dict[str, dict]:
    """The runner's ledger (groups.json): each trial's folder -> {wave, label, seeds, status}."""
    path = exp / "groups.json"
    return json.loads(path.read_text())["groups"] if path.exists() else {}


def _alone() -> dict[str, list[dict]]:
    """What each seed of the race's space computes trained alone (`cnnsearch.engine.fit`, 1 thread, as a trial
    of 1 CPU), by "TRIAL/seed-N"."""
    import torch

    from cnnsearch.config import TrainConfig
    from cnnsearch.data import load_dataset
    from cnnsearch.engine import fit
    from search_spaces import load_space, seed_params, trial_config
    from tune import Plan

    plan = Plan(load_space(DATA / "uneven_trials.yaml"), "smoke", scheduler="fifo")
    data = load_dataset(plan.dataset_name, download=False, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {f"{group.name}/seed-{p['seed']}": fit(TrainConfig.from_dict(trial_config(p)), data,
                                                     device="cpu").history
                for group in plan.groups() for p in seed_params({**plan.shared_params(), **plan.group_params(group)})}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_env(data_root):
    """The environment of the Ray subprocesses. Their own Ray temp folder (short: it holds sockets):
    Ray's default one is shared, and a `ray start` another test leaves there would be joined."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root), "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": temp}
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def interrupted(ray_env, tmp_path_factory):
    """Two runs race for one --name; the winner is stopped with Ctrl-C (SIGINT to its process group,
    as a terminal sends it) once the 1-epoch point's trial has ended (its ledger entry says so), while the
    25-epoch point's runs. Returns both runs' outcomes, the folder, and a copy of it taken before anything
    resumes it."""
    storage = tmp_path_factory.mktemp("race")
    logs = tmp_path_factory.mktemp("race_logs")
    # A storage URI with a credential in it (pyarrow's local filesystem ignores the query).
    args = _tune(*RACE, "--storage", f"file://{storage}?secret_key={SECRET}")
    runs = [subprocess.Popen(args, cwd=REPO, env=ray_env, stdout=open(logs / f"{i}.out", "w"),
                             stderr=open(logs / f"{i}.err", "w"), start_new_session=True) for i in range(2)]
    exp = storage / "race"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and any(p.poll() is None for p in runs) and not any(
                g["status"] == "terminated" for g in _ledger(exp).values()):
            time.sleep(0.1)
        winners = [p for p in runs if p.poll() is None]
        assert len(winners) == 1, [(logs / f"{i}.err").read_text()[-2000:] for i in range(2)]
        os.killpg(winners[0].pid, signal.SIGINT)
        for p in runs:
            p.wait(timeout=120)
    finally:
        for p in runs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    outcomes = [(p.returncode, (logs / f"{i}.out").read_text(), (logs / f"{i}.err").read_text())
                for i, p in enumerate(runs)]
    snapshot = tmp_path_factory.mktemp("snapshot") / "race"
    shutil.copytree(exp, snapshot)
    return {"outcomes": outcomes, "exp": exp, "snapshot": snapshot, "env": ray_env, "storage": storage}


def test_two_runs_cannot_share_one_name(interrupted):
    codes = sorted(code for code, _, _ in interrupted["outcomes"])
    assert codes == [2, 130]
    loser = next(err for code, _, err in interrupted["outcomes"] if code == 2)
    assert loser.strip().splitlines()[-1].endswith("already exists; pass --resume to finish it, or choose another --name")
    assert not any(SECRET in out + err for _, out, err in interrupted["outcomes"])
    record = (interrupted["snapshot"] / "cnnsearch.json").read_text()
    assert SECRET not in record and "secret_key=***" in record  # the command is kept, the credential is not
    # One run's 2 trials (a point with its 2 seeds each), never two runs' pooled.
    assert len(_ledger(interrupted["snapshot"])) == 2
    assert len(list(interrupted["snapshot"].glob("*/seed-*/params.json"))) <= 4


def test_ctrl_c_exits_130_with_the_resume_command(interrupted):
    code, out, err = next(o for o in interrupted["outcomes"] if o[0] == 130)
    last = err.strip().splitlines()[-1]
    ledger = _ledger(interrupted["snapshot"])
    finished = [g["status"] for g in ledger.values()].count("terminated")
    assert last.startswith(f"python -m tune.run: interrupted (Ctrl-C): {finished} of 2 trials finished; finish it "
                           "with: python -m tune.run "), last
    assert last.endswith("--budget smoke --name race --resume") and finished == 1  # the 1-epoch point's trial
    assert "?secret_key=***" in last  # a credential the user must give again, never printed
    seeds = _results(interrupted["snapshot"])
    assert sorted(len(rows) for rows in seeds.values())[:2] == [1, 1]  # the 1-epoch point's seeds
    assert sum(1 for rows in seeds.values() if len(rows) == 25) == 0  # the 25-epoch point's were stopped
    assert "Tuner.restore" not in out + err  # not Tune's resume hint
    assert not any(line.startswith(("best trial:", "next: ")) for line in out.splitlines())  # not a success summary


def test_resume_with_the_printed_command_restores_exactly(interrupted):
    """The resume finishes the unfinished trial, each seed from its own checkpoint: every seed's rows are what
    that seed computes trained alone and uninterrupted, each epoch once; the rows recorded before stay."""
    _, _, err = next(o for o in interrupted["outcomes"] if o[0] == 130)
    command = shlex.split(err.strip().splitlines()[-1].split("finish it with: ", 1)[1])
    before = _results(interrupted["snapshot"])
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=interrupted["env"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _results(interrupted["exp"])
    alone = _alone()
    assert sorted(after) == sorted(alone) and sorted(len(rows) for rows in after.values()) == [1, 1, 25, 25]
    for name, rows in after.items():
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), name  # none lost, none twice
        assert [{k: r[k] for k in METRICS} for r in rows] == [{k: r[k] for k in METRICS} for r in alone[name]], name
        assert rows[:len(before.get(name, []))] == before.get(name, []), name  # what was recorded stays
    assert {g["status"] for g in _ledger(interrupted["exp"]).values()} == {"terminated"}


class _Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _code_payload(marker: Path) -> bytes:
    """A function pickled as code, the way cloudpickle stores what it cannot import by name."""
    import ray.cloudpickle

    return ray.cloudpickle.dumps({"iterators": [lambda: os.system(f"touch {marker}")]})


def plant(folder: Path, marker: Path) -> list[Path]:
    """A payload in every pickle Tune keeps in an experiment folder (tuner.pkl, its searcher's and callbacks'
    state, each trial's params.pkl) and in its JSON state as Tune's restore would read it (pickled results, hex);
    the files planted."""
    payload = pickle.dumps(_Payload(marker))
    planted = [folder / "tuner.pkl", *folder.glob("searcher-state-*"), folder / "callback-states-x.pkl",
               *{*folder.glob("*/params.pkl"), *(t.parent / "params.pkl" for t in folder.glob("*/seed-0"))}]
    for path in planted:
        path.write_bytes(payload)
    for path in folder.glob("search_gen_state-*"):
        path.write_bytes(_code_payload(marker))
        planted.append(path)
    for path in folder.glob("experiment_state-*.json"):
        state = json.loads(path.read_text())
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            trial["results"] = payload.hex()
            entry[0] = json.dumps(trial)
        path.write_text(json.dumps(state))
        planted.append(path)
    return planted


def test_resume_runs_no_code_planted_in_the_folder(interrupted, tmp_path):
    """--resume reads the record, the ledger and the seeds' checkpoints (weights only), never a pickle: with a
    payload planted in every pickle Tune keeps there, it still finishes the experiment and no payload runs."""
    folder = tmp_path / "race"
    shutil.copytree(interrupted["snapshot"], folder)
    marker = tmp_path / "code_ran"
    plant(folder, marker)
    pickle.loads((folder / "tuner.pkl").read_bytes())  # the payload works: unpickled, it leaves the marker
    assert marker.exists()
    marker.unlink()
    resumed = subprocess.run(_tune(*RACE, "--storage", str(tmp_path), "--resume"), cwd=REPO, env=interrupted["env"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not marker.exists()
    assert sorted(len(rows) for rows in _results(folder).values()) == [1, 1, 25, 25]


def _edit_record(folder: Path, change) -> None:
    record = json.loads((folder / "cnnsearch.json").read_text())
    change(record)
    (folder / "cnnsearch.json").write_text(json.dumps(record))


DAMAGE = {
    "groups.json cut short": (lambda f: (f / "groups.json").write_bytes((f / "groups.json").read_bytes()[:60]),
                              "groups.json is damaged"),
    "groups.json not a ledger": (lambda f: (f / "groups.json").write_text('["w1-000_epochs=1_s0+1"]'),
                                 "groups.json is damaged"),
    "groups.json entry with an unknown status": (
        lambda f: (f / "groups.json").write_text((f / "groups.json").read_text().replace('"running"', '"resumable"')),
        "groups.json is damaged (trial w1-001_epochs=25_s0+1 is not a ledger entry)"),
    "cnnsearch.json corrupt": (lambda f: (f / "cnnsearch.json").write_text("{"), "is not a cnnsearch experiment"),
    "cnnsearch.json deleted": (lambda f: (f / "cnnsearch.json").unlink(), "is not a cnnsearch experiment"),
    "cnnsearch.json of another study": (lambda f: _edit_record(f, lambda r: r["space"]["base"].update(lr=0.002)),
                                        "ran with a different base; resume with the flags and space file it ran with"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_ledger_or_record_is_refused_before_ray_starts(damage, interrupted, tmp_path, capsys):
    """--resume restores exactly or refuses in one line; nothing is written, no pickle planted there is read."""
    from tune.run import main

    folder = tmp_path / "race"
    shutil.copytree(interrupted["snapshot"], folder)
    marker = tmp_path / "code_ran"
    plant(folder, marker)
    change, fragment = DAMAGE[damage]
    change(folder)
    before = _tree(folder)
    with pytest.raises(SystemExit) as exit_info:
        main([*RACE, "--storage", str(tmp_path), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and fragment in err[0], err
    assert not marker.exists() and _tree(folder) == before


def test_trainable_refuses_empty_or_unknown_params():
    """What a trial trains comes from its params: empty ones, or a trial of one seed (this runner's trials are a
    point with its seeds), are refused before anything trains (never a default ResNet-18); unknown keys too."""
    from search_spaces import SpaceError
    from tune.trainable import train_group

    for params in ({}, {"seed": 0, "model": "basecnn"}):
        with pytest.raises(ValueError, match="refusing trial params"):
            train_group(params, data=None, storage="unused", name="unused")
    with pytest.raises(SpaceError, match="unknown key 'bogus'"):
        train_group({"seeds": [0], "bogus": 1}, data=None, storage="unused", name="unused")


def test_report_survives_a_truncated_checkpoint_and_ctrl_c_is_one_line(interrupted, tmp_path, capsys):
    from analysis.__main__ import main

    folder = tmp_path / "race"
    shutil.copytree(interrupted["exp"], folder)
    truncated = list(folder.glob("*/seed-*/checkpoint_*/state.pt"))
    assert len(truncated) >= 4  # every seed's latest (and best) epoch
    for path in truncated:
        path.write_bytes(path.read_bytes()[:1000])
    record = folder / "cnnsearch.json"  # as a record written before redaction would have it
    record.write_text(record.read_text().replace("secret_key=***", f"secret_key={SECRET}"))
    assert main(["report", f"file://{folder}?secret_key={SECRET}", "--out", str(tmp_path / "rep"), "--no-download"]) == 0
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "state.pt" in err and "Traceback" not in err
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Test split not evaluated" in report and SECRET not in report + err and "secret_key=***" in report

    env = interrupted["env"]

    for attempt in range(5):  # a loaded machine may let the small report finish before the signal lands: again
        out = tmp_path / f"rep2-{attempt}"
        slow = subprocess.Popen([sys.executable, "-m", "analysis", "report", str(folder), "--out", str(out),
                                 "--no-test"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 120
        while not (out / "figures").exists() and slow.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the report has begun writing: well inside it, with figures still to draw
        slow.send_signal(signal.SIGINT)
        _, err = slow.communicate(timeout=60)
        if slow.returncode != 0:
            break
    assert slow.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "python -m analysis: interrupted (Ctrl-C)"


# ---------------------------------------------------------------------------------------- training
def _train(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnsearch.train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def test_train_sigterm_keeps_the_last_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnsearch.train", *TINY_TRAIN, "--epochs", "100000",
                             "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # The data loader's own notes ("cnnsearch: decoding mnist ...", on a cold cache) may come first.
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("cnnsearch: ")]
    assert proc.returncode == 143 and len(lines) == 1 and "Traceback" not in err, err
    from cnnsearch.engine import load_checkpoint

    epoch = load_checkpoint(out / "checkpoint.pt")["epoch"]  # whole, and the one the message names
    assert lines[0].startswith(f"python -m cnnsearch.train: interrupted (SIGTERM); the checkpoint of epoch {epoch} ")
    assert lines[0].endswith(f"--out {out} --resume") and not list(out.glob("*.tmp*"))


def test_full_disk_while_checkpointing_loses_nothing(data_root, tmp_path):
    """RLIMIT_FSIZE makes every write past 20 kB fail as a full disk does: the checkpoint of epoch 2
    cannot be written. One line, exit 2, epoch 1's files as they were, no temporary file left."""
    from cnnsearch.train import main

    out = tmp_path / "run"
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root)}
    assert main([*TINY_TRAIN, "--epochs", "1", "--out", str(out), "--data-dir", str(data_root)]) == 0
    before = _tree(out)

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the checkpoint is ~750 kB

    proc = _train(*TINY_TRAIN, "--epochs", "2", "--out", str(out), "--resume", env=env, preexec_fn=small_disk)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"cannot write {out / 'checkpoint.pt'}" in lines[0] and "the checkpoint of epoch 1 is intact" in lines[0]
    assert _tree(out) == before
