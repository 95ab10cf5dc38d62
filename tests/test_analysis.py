"""`analysis`: loading experiments, comparisons at equal epoch, claims files and verdicts, the report and
claims.csv, the `report` and `best` CLIs and the notebook.

One tiny real experiment (tests/data/analysis_space.yaml: 6 Base CNN trials on real CIFAR-10 under
ASHA) backs the loading, CLI and notebook tests; the verdicts and the report run on experiment folders
fabricated here with planted effects, written in the same format tune.run writes. The statistics
themselves are calibrated in tests/test_calibration.py; the tests here check that the experiment folder
reaches them unchanged (the same values, the same epoch, the same pool).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis import (
    ClaimsError, check_claims, compare, effects, level_effects, load_claims, load_experiment, parameter_importance,
    verdicts_table, write_report,
)
from analysis.__main__ import main
from analysis.claims import CLAIMS_DIR, CSV_COLUMNS
from analysis.inference import compare_pair, holm, pool_sd
from analysis.comparisons import design_values
from analysis.load import SkippedTrialWarning
from search_spaces import level_key

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "tests" / "data" / "analysis_space.yaml"
TRIALS, MAX_EPOCHS = 6, 3  # 3 points (base, dropout=0.5, lr_decay=0.45) x 2 seeds


# ------------------------------------------------------------------------------ the tiny real run
@pytest.fixture(scope="module")
def tiny_run(data_root, tmp_path_factory) -> Path:
    here = tmp_path_factory.mktemp("analysis_runs")
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root)}
    start = time.perf_counter()
    # The default --storage is relative (runs/): it must mean the folder the command ran in, not a trial's
    # working folder (Tune runs each trial in one of its own).
    proc = subprocess.run([sys.executable, "-m", "tune.run", "--space", str(SPACE), "--budget", "smoke", "--no-dashboard",
                           "--no-download", "--name", "tiny"],
                          cwd=here, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^best trial: val_acc 0\.\d{4}, its seeds' mean", proc.stdout, re.M), proc.stdout[-2000:]
    assert len(list((here / "runs" / "tiny").glob("w1-*/seed-*/result.json"))) == TRIALS
    print(f"tiny tune run: {time.perf_counter() - start:.0f}s")
    return here / "runs" / "tiny"


@pytest.fixture
def claims_file(tmp_path) -> Path:
    path = tmp_path / "tiny_claims.yaml"
    path.write_text("""
metric: val_acc
claims:
  - dropout: [0.0, 0.5]
    source: T
    reported: {0.0: 60.0, 0.5: 55.0}
    statement: "dropout hurts"
  - lr_decay: [0.9, 0.45]
    source: T
    reported: [60.0, 40.0]
  - stem_kernel: [3, 7]
    source: T
""")
    return path


def result_lines(run: Path) -> dict[str, int]:
    """Each seed's reported epochs, by its folder (TRIAL/seed-N): a Tune trial is a point with its seeds."""
    return {f"{p.parent.parent.name}/{p.parent.name}": sum(1 for line in p.read_text().splitlines() if line.strip())
            for p in run.glob("*/seed-*/result.json")}


def test_cost_counts_each_tune_trial_once(tiny_run):
    """A Tune trial is a point with its seeds (TRIAL/seed-N, a row each): the seeds share its clock and its CPU, so
    its wall time counts once in the cost, not once per seed."""
    from analysis.costs import cost

    exp = load_experiment(tiny_run)
    walls = exp.trials.groupby(exp.trials["folder"].str.split("/").str[0])["wall_time_s"]
    assert walls.ngroups == 3 and (walls.size() == 2).all()
    spent = cost(exp)
    assert spent["trial_hours"] * 3600 == pytest.approx(walls.max().sum())
    assert spent["trial_hours"] * 3600 < exp.trials["wall_time_s"].sum()  # each seed's row counted once would be more
    assert spent["device_hours"] == pytest.approx(spent["trial_hours"] * 1.0)  # 1 CPU per trial


def test_load_real_run_tables(tiny_run):
    exp = load_experiment(tiny_run)
    trials, epochs = exp.trials, exp.epochs
    assert len(trials) == TRIALS and not exp.skipped
    assert set(trials["label"]) == {"base", "dropout=0.5", "lr_decay=0.45"}
    assert sorted(trials["seed"]) == [0, 0, 0, 1, 1, 1]
    for column in ("dropout", "lr_decay", "status", "epochs", "stopped_early", "best_val_acc", "last_val_acc",
                   "last_val_loss", "wall_time_s", "cpu", "gpu", "checkpoint", "config/model"):
        assert column in trials, column
    # One epochs row per reported epoch, and each trial's count matches its result.json.
    lines = result_lines(tiny_run)
    assert len(epochs) == sum(lines.values()) == trials["epochs"].sum()
    assert dict(zip(trials["folder"], trials["epochs"])) == lines
    assert list(epochs.columns[:4]) == ["trial_id", "label", "design_factor", "seed"]
    assert {"epoch", "val_acc", "val_loss", "train_loss"} <= set(epochs.columns)
    # ASHA (grace 1) stopped some trials: exactly those with fewer epochs than planned, and not diverged.
    expected = (trials["epochs"] < MAX_EPOCHS) & (trials["status"] != "diverged")
    assert (trials["stopped_early"] == expected).all()
    assert set(trials.loc[trials["stopped_early"], "status"]) <= {"stopped"}
    assert set(trials.loc[trials["epochs"] == MAX_EPOCHS, "status"]) <= {"completed"}
    assert trials["best_val_acc"].ge(trials["last_val_acc"]).all()
    assert all(Path(c).is_file() for c in trials["checkpoint"])
    # The same folder through a pyarrow URI reads the same.
    uri = load_experiment(tiny_run.resolve().as_uri())
    assert uri.trials["trial_id"].tolist() == trials["trial_id"].tolist()
    assert uri.epochs.shape == epochs.shape


def test_half_written_trial_folders_are_skipped_with_warnings(tiny_run, tmp_path):
    run = tmp_path / "broken"
    shutil.copytree(tiny_run, run)
    folders = sorted(p.parent for p in run.glob("*/seed-*/result.json"))
    truncated, orphan = folders[0], folders[-1]
    text = (truncated / "result.json").read_text()
    (truncated / "result.json").write_text(text[: len(text) - 40])  # cut inside the last JSON line
    (orphan / "params.json").unlink()
    with pytest.warns(SkippedTrialWarning) as caught:
        exp = load_experiment(run)
    messages = " | ".join(str(w.message) for w in caught)
    names = [f"{f.parent.name}/{f.name}" for f in (truncated, orphan)]
    assert f"{names[0]}: result.json line" in messages and "not JSON" in messages
    assert f"{names[1]}: no params.json" in messages
    assert len(exp.trials) == TRIALS - 2 and set(names).isdisjoint(exp.trials["folder"])
    assert len(exp.skipped) == 2


@pytest.mark.parametrize("kind", ["empty", "foreign", "missing", "no_trials"])
def test_empty_or_foreign_folder_is_one_line_exit_2(kind, tmp_path, capsys):
    folder = tmp_path / "run"
    if kind != "missing":
        folder.mkdir()
    if kind == "foreign":
        (folder / "notes.txt").write_text("not an experiment")
        (folder / "sub").mkdir()
        (folder / "sub" / "result.json").write_text("{}")
    if kind == "no_trials":
        (folder / "cnnsearch.json").write_text(json.dumps({"space": {"factors": []}, "epochs": 2}))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder), "--no-test"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(folder) in err
    assert {"empty": "cnnsearch.json", "foreign": "cnnsearch.json", "missing": "no such",
            "no_trials": "no readable trial"}[kind] in err


def test_cli_entry_point_bad_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", "best", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("python -m analysis: error:")


# -------------------------------------------------------------------- the report and best CLIs
def test_report_cli_writes_report_figures_and_tables(tiny_run, data_root, claims_file, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["report", str(tiny_run), "--claims", str(claims_file), "--out", str(out),
                 "--data-dir", str(data_root), "--no-download"])
    assert code == 0
    assert str(out / "report.md") in capsys.readouterr().out
    report = (out / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", report, flags=re.M)
    assert sections[0] == "Claims", sections  # claims first
    assert sections[1:4] == ["Seed noise and what this run can detect", "Factor: dropout", "Factor: lr_decay"]
    assert sections[-1] == "Cost"
    claims_table = report.split("## Claims")[1].split("\n## ")[0]
    rows = [line for line in claims_table.splitlines() if line.startswith("| **")]
    assert len(rows) == 3
    assert "report's value" in claims_table and "0.0: 60 / 0.5: 55" in claims_table
    assert "**not tested**" in rows[2] and "stem_kernel" in rows[2]
    for row in rows[:2]:
        assert re.search(r"\*\*(supported|reversed|not resolved)\*\*<br>budget smoke, model basecnn, 2 seeds", row)
        assert re.search(r"@ epoch \d", row) and "adj." in row
    claims_csv = (out / "claims.csv").read_text().splitlines()
    assert claims_csv[0] == ",".join(CSV_COLUMNS) and len(claims_csv) == 1 + 3  # one pair per claim
    for name in ("curves_dropout", "levels_dropout", "curves_lr_decay", "levels_lr_decay", "asha_rungs",
                 "overfitting", "best_curves", "confusion"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
        assert f"figures/{name}.png" in report
    trials = (out / "trials.csv").read_text().splitlines()
    epochs = (out / "epochs.csv").read_text().splitlines()
    assert len(trials) == TRIALS + 1 and len(epochs) == sum(result_lines(tiny_run).values()) + 1
    assert re.search(r"Test split \(10,000 images\).*accuracy \*\*\d+\.\d\d%\*\*", report)
    cost = report.split("## Cost")[1]
    assert f"of {TRIALS * MAX_EPOCHS} if every trial ran to its end" in cost and "ASHA's saving" in cost


def test_report_without_test_split_through_uri(tiny_run, tmp_path):
    out = tmp_path / "report"
    assert main(["report", tiny_run.resolve().as_uri(), "--out", str(out), "--no-test"]) == 0
    report = (out / "report.md").read_text()
    assert not (out / "figures" / "confusion.png").exists()
    assert "Test split not evaluated (`--no-test`)" in report
    assert "No claims file for space `analysis_space`" in report  # no shipped claims for this space
    assert not (out / "claims.csv").exists()


def test_report_rejects_claims_that_do_not_fit(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - dropout: [0.0, 0.9]\n")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tiny_run), "--claims", str(bad), "--out", str(tmp_path / "out"), "--no-test"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml" in err and "claims[0].dropout" in err and "0.9" in err


def test_best_cli_prints_config_and_test_accuracy(tiny_run, data_root, capsys, tmp_path):
    """`analysis best` restores the best trial's best epoch (Tune keeps that checkpoint besides the last),
    prints the command that retrains its config, and --export writes a model that torch alone runs."""
    import shlex

    import torch

    from cnnsearch.config import TrainConfig
    from cnnsearch.data import load_dataset
    from cnnsearch.train import build_parser, config_from_args

    assert main(["best", str(tiny_run), "--data-dir", str(data_root), "--no-download", "--device", "cpu",
                 "--export", str(tmp_path / "winner")]) == 0
    out = capsys.readouterr().out
    exp = load_experiment(tiny_run)
    best = exp.trials.loc[exp.trials["best_val_acc"].idxmax()]
    assert out.startswith(f"best trial: {best['label']} seed {best['seed']}")
    config = json.loads(re.search(r"^config: (.+)$", out, flags=re.M).group(1))
    assert config["model"] == "basecnn" and config["seed"] == best["seed"]
    accuracy = float(re.search(r"^test accuracy: (\d\.\d{4}) \(10000 images\)", out, flags=re.M).group(1))
    assert 0.0 <= accuracy <= 1.0
    restored = int(re.search(rf"restored from the checkpoint of its best val_acc \(epoch (\d) of {MAX_EPOCHS}\)", out).group(1))
    at = exp.epochs.set_index(["trial_id", "epoch"])["val_acc"]
    assert at[(best["trial_id"], restored)] == best["best_val_acc"]  # the best epoch, or one tied with it

    words = shlex.split(re.search(r"^retrain: (.+)$", out, flags=re.M).group(1))
    assert words[:3] == ["python", "-m", "cnnsearch.train"] and words[-2:] == ["--out", "runs/train/tiny-best"]
    assert config_from_args(build_parser().parse_args(words[3:])) == TrainConfig.from_dict(config)

    program = torch.export.load(str(tmp_path / "winner" / "model.pt2")).module()
    test = load_dataset("cifar10", data_dir=data_root, download=False, progress=False).test
    with torch.no_grad():
        predicted = torch.cat([program(images).argmax(1) for images in test.images.split(2000)])  # uint8 in
    assert (predicted == test.labels).double().mean().item() == pytest.approx(accuracy, abs=1e-4)
    assert json.loads((tmp_path / "winner" / "winner.json").read_text())["config"] == config


def test_notebook_executes(tiny_run, data_root, claims_file, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("CNNSEARCH_RUN_DIR", str(tiny_run))
    monkeypatch.setenv("CNNSEARCH_DATA_DIR", str(data_root))
    monkeypatch.setenv("CNNSEARCH_CLAIMS", str(claims_file))
    nb = nbformat.read(REPO / "analysis" / "ablation.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "analysis")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 7  # 2 per factor, over-fitting, ASHA, confusion
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"{TRIALS} trials" in text and "not tested" in text
    assert re.search(r"test accuracy \d+\.\d\d% on 10000 images", text)


# --------------------------------------------------------------------- fabricated experiments
BASE = {"model": "basecnn", "dataset": "cifar10", "optimizer": "adam", "lr": 0.001, "dropout": 0.0}
# Seed noise in points, the same for every point: differences between points are then exactly the planted ones,
# and the pooled sd is this pattern's (0.40 points; 6 seeds per point, df 5 per point).
PATTERN = np.array([-0.6, -0.2, 0.0, 0.2, 0.6, 0.0])


def write_run(root: Path, *, design: str, factors: dict[str, list], trials: list[dict], epochs: int = 4,
              seeds: list[int] = (0, 1, 2), scheduler: str = "asha", dataset: str = "cifar10",
              base_seeds: list[int] = ()) -> Path:
    """An experiment folder as tune.run writes one. trials: {"values": {factor: level}, "seed", "acc": [...
    val acc per epoch], "status" (default: completed if it ran every epoch, else running), "error": True to
    leave Tune's error.txt (a crashed trial)}."""
    root.mkdir(parents=True)
    spec = [{"name": n, "levels": lv, "distribution": None} if isinstance(lv, list) else
            {"name": n, "levels": None, "distribution": lv} for n, lv in factors.items()]
    # one_at_a_time: the base sets every factor's first level
    base = {**BASE, "dataset": dataset, **{n: lv[0] for n, lv in factors.items()
                                          if isinstance(lv, list) and not isinstance(lv[0], dict)}}
    state = {"space": {"name": "fake", "design": design, "metric": "val_acc", "mode": "max", "seeds": list(seeds),
                       "base": {**base, "epochs": epochs}, "factors": spec, "points": None,
                       **({"base_seeds": list(base_seeds)} if base_seeds else {})},
             "budget": "smoke", "epochs": epochs, "scheduler": scheduler, "search": "grid", "grace_period": 1,
             "reduction_factor": 2, "num_trials": len(trials), "dataset": dataset, "resources": {"cpu": 1, "gpu": 0}}
    (root / "cnnsearch.json").write_text(json.dumps(state))
    for i, t in enumerate(trials):
        trial_id = f"fake_{i:05d}"
        params = {**base, "epochs": epochs, "seed": t["seed"]}
        if design == "one_at_a_time":
            (factor, level), = t["values"].items() or [(None, None)]
            params["design_point"] = {"label": f"{factor}={level}" if factor else "base", "factor": factor, "level": level}
        else:
            params.update(t["values"])
        folder = root / f"t{i}_{trial_id}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params))
        if t.get("error"):
            (folder / "error.txt").write_text("RuntimeError: CUDA out of memory")
        rows = []
        for e, acc in enumerate(t["acc"], start=1):
            last = e == len(t["acc"])
            status = t.get("status", "completed" if e == epochs else "running") if last else "running"
            rows.append({"epoch": e, "val_acc": acc, "val_loss": 2 * (1 - acc), "train_acc": acc, "train_loss": 1 - acc,
                         "status": status, "time_total_s": 10.0 * e, "epoch_time_s": 10.0, "trial_id": trial_id})
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_claims(tmp_path: Path, text: str, name: str = "claims.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# One at a time under FIFO, 6 seeds, 3 epochs: each claim below has one planted truth (points at the last epoch).
PLANTED = {None: 50.0, ("dropout", 0.5): 45.0, ("lr", 0.01): 55.0, ("stem_kernel", 7): 50.0, ("lr_decay", 0.45): 50.0}
PLANTED_FACTORS = {"dropout": [0.0, 0.5], "lr": [0.001, 0.01], "stem_kernel": [3, 7], "lr_decay": [0.9, 0.45]}
PLANTED_CLAIMS = """
about: {dataset: cifar10}
claims:
  - dropout: 0.0 > 0.5          # truth +5: supported
    source: T
    reported: [60, 55]
  - lr: 0.001 > 0.01            # truth -5: reversed
    source: T
  - stem_kernel: 3 ~ 7          # truth 0 (tie): equivalent
    source: T
  - lr_decay: [0.9, 0.45]       # truth 0, claimed an order: not resolved
    source: T
"""


def planted_trials(crash: dict | None = None) -> list[dict]:
    """crash: {(point, seed): trial fields} replacing that trial's (e.g. a crash after one epoch)."""
    trials = []
    for point, mean in PLANTED.items():
        for seed, noise in enumerate(PATTERN):
            last = (mean + noise) / 100
            trial = {"values": dict([point]) if point else {}, "seed": seed, "acc": [last - 0.2, last - 0.1, last]}
            trials.append({**trial, **(crash or {}).get((point, seed), {})})
    return trials


@pytest.fixture
def planted(tmp_path):
    return load_experiment(write_run(tmp_path / "planted", design="one_at_a_time", factors=PLANTED_FACTORS, epochs=3,
                                     seeds=list(range(6)), scheduler="fifo", trials=planted_trials()))


def test_planted_effects_get_their_verdicts_in_the_report_and_claims_csv(planted, tmp_path):
    claims = load_claims(write_claims(tmp_path, PLANTED_CLAIMS))
    checked = check_claims(planted, claims)
    assert [v.verdict for v in checked] == ["supported", "reversed", "equivalent", "not resolved"]
    assert not any(v.early or v.exploratory for v in checked)
    assert checked.headline == {"supported": 1, "reversed": 1, "equivalent": 1, "not resolved": 1, "not tested": 0}
    # The folder reaches the calibrated test unchanged: the same values at the last epoch, pooled over all 5 points.
    values = {("base" if p is None else f"{p[0]}={p[1]}"): m + PATTERN for p, m in PLANTED.items()}
    pooled = pool_sd(values)
    assert (pooled.df, pooled.sd) == (25, pytest.approx(0.4))
    for v, (a, relation, b) in zip(checked, [("base", ">", "dropout=0.5"), ("base", ">", "lr=0.01"),
                                              ("base", "~", "stem_kernel=7"), ("base", ">", "lr_decay=0.45")]):
        test, = v.comparisons
        expected = compare_pair(values, a, relation, b)
        assert (test.epoch, test.final, test.n_a, test.n_b, test.df) == (3, True, 6, 6, 25)
        assert (test.diff, test.low, test.high, test.p) == pytest.approx((expected.diff, expected.low, expected.high,
                                                                          expected.p), abs=1e-9)
        assert v.context == "budget smoke, model basecnn, 6 seeds"
    assert [p.p_adjusted for v in checked for p in v.pairs] == pytest.approx(holm([v.comparisons[0].p for v in checked]))
    assert checked[0].comparisons[0].diff == pytest.approx(5.0) and checked[1].comparisons[0].diff == pytest.approx(-5.0)

    out = tmp_path / "report"
    write_report(planted, out, claims=claims, test=False)
    report = (out / "report.md").read_text()
    assert "**Headline** (claims judged at the last epoch of their levels): 1 supported, 1 reversed, 1 equivalent, " \
           "1 not resolved, 0 not tested." in report
    assert "epoch 3: sd 0.40 points, df 25" in report and "Holm's step-down correction over 4 tests" in report
    assert "**supported**<br>budget smoke, model basecnn, 6 seeds" in report and "exploratory" not in report
    from analysis.power import detectable_effect
    assert f"at least **{detectable_effect(0.4, points=5, seeds=6, family=4):.1f} points**" in report
    with (out / "claims.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == ["supported", "reversed", "equivalent", "not resolved"]
    assert [r["pair"] for r in rows] == ["0.0 > 0.5", "0.001 > 0.01", "3 ~ 7", "0.9 > 0.45"]
    assert rows[2]["margin"] == "2.0" and rows[2]["confidence"] == "0.9" and rows[0]["confidence"] == "0.95"
    assert {r["epoch"] for r in rows} == {"3"} and {r["n_a"] for r in rows} == {"6"} and rows[0]["family"] == "4"
    assert float(rows[0]["diff"]) == pytest.approx(5.0) and float(rows[0]["low"]) > 0
    assert float(rows[3]["p_adjusted"]) == pytest.approx(float(checked[3].pairs[0].p_adjusted))


def test_more_seeds_on_the_base_point_count_in_every_pair(tmp_path):
    """Points at 3 seeds, the base at 9 (`base_seeds`): each pair tests 9 against 3 on the pooled df 4 x 2 + 8,
    and the report's header and detectable effect say so."""
    trials = [t for t in planted_trials() if t["seed"] < 3 or not t["values"]]  # PATTERN: 6 seeds
    trials += [{**t, "seed": t["seed"] + 6} for t in planted_trials() if not t["values"] and t["seed"] < 3]
    run = load_experiment(write_run(tmp_path / "base9", design="one_at_a_time", factors=PLANTED_FACTORS, epochs=3,
                                    seeds=[0, 1, 2], base_seeds=list(range(9)), scheduler="fifo", trials=trials))
    assert run.record.base_seeds == tuple(range(9))
    claims = load_claims(write_claims(tmp_path, PLANTED_CLAIMS))
    checked = check_claims(run, claims)
    assert [v.verdict for v in checked][:2] == ["supported", "reversed"]
    for v in checked:
        test, = v.comparisons
        assert (test.n_a, test.n_b, test.df) == (9, 3, 16)
    out = tmp_path / "report"
    write_report(run, out, claims=claims, test=False)
    report = (out / "report.md").read_text()
    assert "seeds 0, 1, 2 (base point: 0, 1, 2, 3, 4, 5, 6, 7, 8)" in report
    sd = pool_sd(design_values(run, 3)).sd
    from analysis.power import detectable_effect
    mde = detectable_effect(sd, points=5, seeds=3, base_seeds=9, family=4)
    assert mde < detectable_effect(sd, points=5, seeds=3, family=4)
    assert f"5 design points x 3 seeds (9 on the base point), a difference between two points is found with 80% " \
           f"power after Holm over the claims file's 4 tests when it is at least **{mde:.1f} points**" in report


def test_a_folder_rebuilt_from_the_report_tables_gives_the_same_verdicts(planted, tmp_path):
    """results/rejudge.py re-judges results whose experiment folder is gone from their trials.csv and epochs.csv."""
    from analysis.rebuild import rebuild_run

    claims = load_claims(write_claims(tmp_path, PLANTED_CLAIMS))
    planted.trials.to_csv(tmp_path / "trials.csv", index=False)  # as write_report writes them
    planted.epochs.to_csv(tmp_path / "epochs.csv", index=False)
    rebuilt = load_experiment(rebuild_run(tmp_path, planted.record, tmp_path / "rebuilt"))
    assert check_claims(rebuilt, claims).rows() == check_claims(planted, claims).rows()
    columns = ["label", "seed", "status", "epochs", "dropout", "lr", "stem_kernel", "lr_decay", "best_val_acc"]
    assert rebuilt.trials[columns].equals(planted.trials[columns])


def test_crashed_and_unfinished_trials_are_left_out_not_the_epoch(tmp_path):
    """FIFO: one trial crashed after 1 of 3 epochs, one never finished. Their points are still compared at epoch 3
    on the other seeds, the note names them, and nothing blames a scheduler the run did not use."""
    crash = {(("dropout", 0.5), 5): {"acc": [0.3], "error": True},
             (("stem_kernel", 7), 0): {"acc": [0.3, 0.4], "status": "running"}}
    exp = load_experiment(write_run(tmp_path / "crash", design="one_at_a_time", factors=PLANTED_FACTORS, epochs=3,
                                    seeds=list(range(6)), scheduler="fifo", trials=planted_trials(crash)))
    statuses = exp.trials.set_index(["label", "seed"])["status"]
    assert statuses[("dropout=0.5", 5)] == "error" and statuses[("stem_kernel=7", 0)] == "unfinished"
    checked = check_claims(exp, load_claims(write_claims(tmp_path, PLANTED_CLAIMS)))
    dropout, stem = checked[0].comparisons[0], checked[2].comparisons[0]
    assert (dropout.epoch, dropout.final, dropout.n_a, dropout.n_b, dropout.df) == (3, True, 6, 5, 23)
    assert (stem.epoch, stem.n_b) == (3, 5)
    assert [v.verdict for v in checked] == ["supported", "reversed", "equivalent", "not resolved"]
    assert "left out (crashed or unfinished): dropout=0.5 seed 5 (error after 1 of 3 epochs)" in checked[0].note
    assert "stem_kernel=7 seed 0 (unfinished after 2 of 3 epochs)" in checked[2].note
    assert "left out" not in checked[1].note
    for v in checked:
        assert "ASHA" not in v.note and "--scheduler" not in v.note
    out = tmp_path / "report"
    write_report(exp, out, claims=load_claims(write_claims(tmp_path, PLANTED_CLAIMS)), test=False)
    report = (out / "report.md").read_text()
    assert "Left out of every comparison, pool and importance (crashed or unfinished): `dropout=0.5` seed 5" in report
    assert "ASHA" not in report


@pytest.fixture
def asha_oat(tmp_path):
    """One at a time. dropout=0.5 is better than the base up to epoch 2, where ASHA stopped it; the base
    ran on to 0.80, so comparing last values would wrongly favour the base. lr=0.01 does nothing."""
    noise = [0.0, 0.004, -0.004]
    trials = []
    for s, n in enumerate(noise):
        trials.append({"values": {}, "seed": s, "acc": [0.30 + n, 0.40 + n, 0.60 + n, 0.80 + n]})
        trials.append({"values": {"dropout": 0.5}, "seed": s, "acc": [0.35 + n, 0.45 + n]})
        trials.append({"values": {"lr": 0.01}, "seed": s, "acc": [0.30 - n, 0.40 - n / 2, 0.60 + n, 0.80 - n]})
    return load_experiment(write_run(tmp_path / "oat", design="one_at_a_time",
                                     factors={"dropout": [0.0, 0.5], "lr": [0.001, 0.01]}, trials=trials))


def test_asha_tables_and_figures_show_both_levels_at_the_tested_epoch(asha_oat, tmp_path):
    """dropout=0.5 was stopped at epoch 2 of 4: its comparison, its table row and its figure all stand at epoch 2,
    the base's mean included (0.40 there, not its 0.80 at epoch 4); the verdict is early, out of the headline."""
    c = compare(asha_oat, "dropout", 0.5, 0.0)
    assert (c.epoch, c.final, c.n_a, c.n_b) == (2, False, 3, 3)
    assert c.diff == pytest.approx(5.0) and c.low > 0  # at the last epoch the base would win
    assert asha_oat.trials.set_index("label").loc["dropout=0.5", "stopped_early"].all()
    row = level_effects(asha_oat, "dropout").iloc[0]
    assert (row["level"], row["reference"], row["epoch"], row["final"]) == ("0.5", "0", 2, False)
    assert (row["mean"], row["reference_mean"]) == pytest.approx((45.0, 40.0))
    lr = compare(asha_oat, "lr", 0.01, 0.001)  # compared over all four epochs of both: no effect to find
    assert (lr.epoch, lr.final) == (4, True) and lr.low < 0 < lr.high
    table = effects(asha_oat)
    assert table[["factor", "epoch"]].values.tolist() == [["dropout", 2], ["lr", 4]]

    from analysis import plot_level_effects
    fig = plot_level_effects(level_effects(asha_oat, "dropout"))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.5\nepoch 2, n=3/3"]

    checked = check_claims(asha_oat, load_claims(write_claims(tmp_path, "claims:\n  - dropout: 0.5 > 0.0\n"
                                                                        "  - lr: 0.001 > 0.01\n")))
    assert [(v.verdict, v.early) for v in checked] == [("supported", True), ("not resolved", False)]
    assert "compared at epoch 2 of 4, where ASHA stopped trials" in checked[0].note
    assert checked.headline["supported"] == 0 and checked.headline["not resolved"] == 1
    out = tmp_path / "report"
    write_report(asha_oat, out, claims=checked.claims, test=False)
    report = (out / "report.md").read_text()
    assert "1 more compared early (before a level's last epoch) are not counted" in report
    dropout_table = report.split("## Factor: dropout")[1].split("##")[0]
    assert "| 0.5 | 2 (early) | 3 / 3 | 45.00 | 40.00 | +5.00 [" in dropout_table


@pytest.fixture
def recipes(tmp_path):
    """A grid like the optimizers space: 2 models x 3 recipes (optimizer and lr together), 3 seeds. Adam is 5 points
    above either SGD recipe for both models; resnet18 is 20 points above basecnn."""
    recipe = [{"optimizer": "sgd", "lr": 0.001}, {"optimizer": "adam", "lr": 0.001}, {"optimizer": "sgd", "lr": 0.01}]
    trials = []
    for model, level in (("basecnn", 50.0), ("resnet18", 70.0)):
        for r in recipe:
            for s, n in enumerate(PATTERN[:3]):
                acc = (level + 5.0 * (r["optimizer"] == "adam") + n) / 100
                trials.append({"values": {"model": model, "recipe": r}, "seed": s, "acc": [acc - 0.1, acc]})
    return load_experiment(write_run(tmp_path / "recipes", design="grid", epochs=2, scheduler="fifo", trials=trials,
                                     factors={"model": ["basecnn", "resnet18"], "recipe": recipe}))


def test_a_key_set_by_a_multi_key_factor_is_tested(recipes, tmp_path):
    """`optimizer` is varied through `recipe`: a claim on it is tested (it used to say "not tested"), its levels
    grouping the recipes that set it; `where` narrows on another factor or on a key of the same recipe level."""
    checked = check_claims(recipes, load_claims(write_claims(tmp_path, """
claims:
  - optimizer: adam > sgd
  - optimizer: adam > sgd
    where: {model: resnet18}
  - model: resnet18 > basecnn
    where: {recipe: {optimizer: adam, lr: 0.001}}
""")))
    assert [v.verdict for v in checked] == ["supported", "supported", "supported"]
    every, resnet, model = (v.comparisons[0] for v in checked)
    assert (every.n_a, every.n_b, every.diff) == (6, 12, pytest.approx(5.0))  # adam: 2 cells; sgd: 4 cells
    assert (resnet.n_a, resnet.n_b, resnet.diff) == (3, 6, pytest.approx(5.0))
    assert (model.n_a, model.n_b, model.diff) == (3, 3, pytest.approx(20.0))
    assert every.df == 6 * 2 and "model basecnn/resnet18" in checked[0].context
    with pytest.raises(ClaimsError, match=r"claims\[0\].optimizer: where: recipe is set by recipe, the factor the "
                                          r"claim compares"):
        check_claims(recipes, load_claims(write_claims(tmp_path, "claims:\n  - optimizer: adam > sgd\n"
                                                                 "    where: {recipe: {optimizer: adam, lr: 0.001}}\n")))


def test_claims_about_other_data_are_not_applicable(tmp_path):
    """A run on MNIST and a claims file about CIFAR-10: no verdicts, `not applicable` everywhere, and the title
    names the data the run used."""
    trials = [{"values": v, "seed": s, "acc": [0.5 + 0.01 * s + 0.1 * bool(v)]} for v in ({}, {"dropout": 0.5})
              for s in range(2)]
    exp = load_experiment(write_run(tmp_path / "mnist", design="one_at_a_time", factors={"dropout": [0.0, 0.5]},
                                    epochs=1, seeds=[0, 1], scheduler="fifo", dataset="mnist", trials=trials))
    claims = load_claims(write_claims(tmp_path, "about: {dataset: [cifar10, cifar100]}\nclaims:\n  - dropout: 0.5 > 0.0\n"))
    checked = check_claims(exp, claims)
    assert [v.verdict for v in checked] == ["not applicable"] and checked.judgement is None and not checked.headline
    assert checked.not_applicable == "claims.yaml speaks about cifar10 or cifar100; this run trained on mnist"
    out = tmp_path / "report"
    write_report(exp, out, claims=claims, test=False)
    report = (out / "report.md").read_text()
    assert report.startswith("# `fake` on MNIST (budget smoke, FIFO)")
    assert "**Not applicable**: claims.yaml speaks about cifar10 or cifar100" in report and "**supported**" not in report
    assert (out / "claims.csv").read_text().splitlines()[1].split(",")[CSV_COLUMNS.index("verdict")] == "not applicable"
    model = load_claims(write_claims(tmp_path, "about: {dataset: mnist, model: resnet18}\nclaims:\n  - dropout: 0.5 > 0.0\n"))
    assert check_claims(exp, model).not_applicable == "claims.yaml speaks about resnet18; this run trained basecnn"
    from analysis.display import dataset_name
    assert dataset_name("imagefolder:/data/fashion") == "image folder /data/fashion" and dataset_name("cifar10") == "CIFAR-10"


def test_claims_file_syntax(tmp_path):
    """Chains as strings or lists with relation tokens, margins per file and per claim."""
    claims = load_claims(write_claims(tmp_path, """
margin: 1.5
claims:
  - recipe: "{optimizer: sgd, lr: 0.01} ~ {optimizer: adam, lr: 0.001} > {optimizer: sgd, lr: 0.001}"
    margin: 3
  - blocks_per_stage: [[3, 3, 3, 3], "<", [2, 2, 2, 2]]
  - lr_decay: [0.9, 1.0, 0.45]
  - stem_bn: true > false
"""))
    assert claims.margin == 1.5
    recipe, blocks, decay, bn = claims
    assert recipe.order == ("lr=0.01,optimizer=sgd", "lr=0.001,optimizer=adam", "lr=0.001,optimizer=sgd")
    assert recipe.relations == ("~", ">") and recipe.margin == 3
    assert recipe.chain == "optimizer=sgd,lr=0.01 ~ optimizer=adam,lr=0.001 > optimizer=sgd,lr=0.001"
    assert (blocks.order, blocks.relations, blocks.margin) == (("[3,3,3,3]", "[2,2,2,2]"), ("<",), None)
    assert decay.relations == (">", ">") and decay.text == "lr_decay: 0.9 > 1.0 > 0.45"
    assert bn.order == ("true", "false")
    example = re.search(r"```yaml\n(.*?)```", (REPO / "analysis" / "README.md").read_text(), re.S).group(1)
    readme = load_claims(write_claims(tmp_path, example))
    assert [c.chain for c in readme] == ["3 > 7", "0.9 > 1.0 > 0.45", "se_resnet18 ~ resnet18 > densenet121",
                                         "optimizer=sgd,lr=0.01 ~ optimizer=adam,lr=0.001 > optimizer=sgd,lr=0.001",
                                         "[3,3,3,3] > [2,2,2,2]"]
    assert (readme.margin, readme.about, readme.claims[3].margin) == (2, {"dataset": "cifar10", "budget": "full"}, 3)


@pytest.mark.parametrize("text, message", [
    ("claims:\n  - dropout: [0.0]\n", "two or more levels"),
    ("claims:\n  - dropout: 0.0\n", "two or more levels"),
    ("claims:\n  - dropout: '0.0 >> 0.5'\n", "joined by >, < or ~"),
    ("claims:\n  - dropout: [0.0, '>', '~', 0.5]\n", "must alternate level, relation, level"),
    ("claims:\n  - dropout: [0.0, 0.5, '>']\n", "must alternate level, relation, level"),
    ("claims:\n  - dropout: 0.0 > 0.0\n", "a level appears twice"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    lr: [0.1, 0.2]\n", "exactly one factor"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    reported: [1, 2, 3]\n", "one value per level"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    reported: {0.7: 1}\n", "0.7 are not in the claim's order"),
    ("claims:\n  - dropout: 0.0 ~ 0.5\n    margin: 0\n", "claims[0].dropout: margin: must be a positive number"),
    ("margin: -1\nclaims: []\n", "claims.yaml: margin: must be a positive number of points, got -1"),
    ("about: {data: cifar10}\nclaims: []\n", "about: unknown key 'data'"),
    ("about: {budget: huge}\nclaims: []\n", "about.budget: must be one of smoke, cpu, full"),
    ("claims:\n  - dropout: 0.0 > 0.5\n    where: {dropout: 0.5}\n", "where: dropout is the claim's own factor"),
    ("claim: []\n", "expected a mapping with a `claims` list"),
    ("claims: [\n", "not valid YAML"),
])
def test_malformed_claims_files(tmp_path, text, message):
    with pytest.raises(ClaimsError) as exc:
        load_claims(write_claims(tmp_path, text))
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text, message", [
    ("claims:\n  - stem_kernal: [3, 7]\n", "claims[0].stem_kernal: unknown factor"),
    ("claims:\n  - dropout: [0.0, 0.9]\n", "claims[0].dropout: level 0.9 is not in the experiment"),
    ("claims:\n  - dropout: [0.5, 0.0]\n    where: {lr: 0.1}\n", "claims[0].dropout: where: lr: level 0.1"),
])
def test_claims_that_do_not_fit_the_experiment(asha_oat, tmp_path, text, message):
    with pytest.raises(ClaimsError) as exc:
        check_claims(asha_oat, load_claims(write_claims(tmp_path, text)))
    assert str(exc.value).startswith("claims.yaml: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_where_on_the_claims_own_factor_is_exit_2(planted, tmp_path, capsys):
    bad = write_claims(tmp_path, "claims:\n  - dropout: 0.0 > 0.5\n    where: {dropout: 0.5}\n")
    with pytest.raises(SystemExit) as exc:
        main(["report", planted.path, "--claims", str(bad), "--no-test", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "claims[0].dropout: where: dropout is the claim's own factor" in err


def test_verdicts_and_where_on_a_grid(tmp_path):
    """2 models x 2 dropouts, 3 seeds: the models differ hugely, dropout 0.5 adds 2 points everywhere. Marginal
    means average the cells; `where` keeps one model's cells; a `where` on a key the run did not vary checks its
    base."""
    trials = []
    for model, level in (("basecnn", 50.0), ("resnet18", 90.0)):
        for dropout, bonus in ((0.0, 0.0), (0.5, 2.0)):
            for s, n in enumerate(PATTERN[:3]):
                acc = (level + bonus + n / 4) / 100
                trials.append({"values": {"model": model, "dropout": dropout}, "seed": s, "acc": [acc - 0.1, acc]})
    grid = load_experiment(write_run(tmp_path / "grid", design="grid", epochs=2, scheduler="fifo", trials=trials,
                                     factors={"model": ["basecnn", "resnet18"], "dropout": [0.0, 0.5]}))
    row = level_effects(grid, "dropout").iloc[0]
    assert (row["epoch"], row["n"], row["diff"]) == (2, 6, pytest.approx(2.0)) and row["low"] > 0
    checked = check_claims(grid, load_claims(write_claims(tmp_path, """
claims:
  - dropout: 0.5 > 0.0
    where: {model: resnet18}
  - model: resnet18 > basecnn
  - model: basecnn > resnet18
  - model: resnet18 > basecnn
    where: {recipe: {optimizer: adam, lr: 0.001}}   # not a factor here, but what the base ran
  - model: resnet18 > basecnn
    where: {recipe: {optimizer: sgd, lr: 0.01}}
  - stem_kernel: 3 > 7                              # not varied here
""")))
    assert [v.verdict for v in checked] == ["supported", "supported", "reversed", "supported", "not tested",
                                            "not tested"]
    assert (checked[0].comparisons[0].n_a, checked[0].comparisons[0].n_b) == (3, 3)  # only resnet18's trials
    assert checked[4].note == "the experiment ran optimizer=adam, lr=0.001; the claim is about recipe=optimizer=sgd,lr=0.01"
    assert checked[5].note == "the experiment does not vary stem_kernel"
    assert checked.judgement.family == 4  # untested claims are not in Holm's family
    table = verdicts_table(checked)
    assert table["verdict"].tolist()[:3] == ["supported", "supported", "reversed"]
    assert "@ epoch 2 (n=3/3)" in table.loc[0, "measured"] and "adj." in table.loc[0, "measured"]


def test_one_seed_is_not_resolved(tmp_path):
    trials = [{"values": {}, "seed": 0, "acc": [0.3, 0.4]}, {"values": {"dropout": 0.5}, "seed": 0, "acc": [0.6, 0.9]}]
    exp = load_experiment(write_run(tmp_path / "one", design="one_at_a_time", factors={"dropout": [0.0, 0.5]},
                                    trials=trials, epochs=2, seeds=[0], scheduler="fifo"))
    verdict, = check_claims(exp, load_claims(write_claims(tmp_path, "claims:\n  - dropout: [0.5, 0.0]\n")))
    assert verdict.verdict == "not resolved" and "no estimate of seed noise" in verdict.note
    assert verdict.comparisons[0].diff == pytest.approx(50.0) and verdict.exploratory


@pytest.mark.parametrize("path", sorted(CLAIMS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_claims_fit_their_space(path):
    from search_spaces import load_space

    claims = load_claims(path)
    space = load_space(path.stem)
    assert claims.space == path.stem and len(claims) >= 3
    assert claims.about["dataset"] == space.base["dataset"] == "cifar10" and claims.about["budget"] == "full"
    factors = {f.name: f for f in space.factors}
    for claim in claims:
        assert claim.source in "ABCDE" and claim.statement and all(v is not None for v in claim.reported)
        levels = list(factors[claim.factor].by_key())
        assert set(claim.order) <= set(levels), (claim.key, claim.order, levels)
        for name, level in claim.where.items():
            assert level in factors[name].by_key()
    assert {path.stem for path in CLAIMS_DIR.glob("*.yaml")} == {"ablation", "architectures", "optimizers"}


def test_shipped_ties_are_the_reports_ties():
    """Report A: deeper is not better (ResNet-18 ~ ResNet-50); report D: SE-ResNet-18 ~ ResNet-18 and, for the
    Base CNN, SGD 1e-2 ~ Adam 1e-3."""
    chains = {c.source + ":" + c.chain for name in ("architectures", "optimizers")
              for c in load_claims(CLAIMS_DIR / f"{name}.yaml")}
    assert "A:densenet121 > mobilenet_v2 > resnet18 ~ resnet50 > basecnn" in chains
    assert "D:se_resnet18 ~ resnet18 > densenet121 > basecnn" in chains
    assert "D:optimizer=sgd,lr=0.01 ~ optimizer=adam,lr=0.001 > optimizer=sgd,lr=0.001" in chains


def test_importance_noise_floor_in_the_report(tmp_path):
    """A grid where the model moves accuracy by 10 points and dropout by nothing: fANOVA calls both important
    (its importances sum to 1), the floor separates them, and the report says which matters."""
    pytest.importorskip("sklearn")
    trials = []
    for model, level in (("basecnn", 50.0), ("resnet18", 60.0)):
        for dropout in (0.0, 0.5):
            for s, n in enumerate(PATTERN[:3]):
                acc = (level + n + (0.3 if dropout and s == 1 else 0)) / 100
                trials.append({"values": {"model": model, "dropout": dropout}, "seed": s, "acc": [acc - 0.1, acc]})
    grid = load_experiment(write_run(tmp_path / "grid", design="grid", epochs=2, scheduler="fifo", trials=trials,
                                     factors={"model": ["basecnn", "resnet18"], "dropout": [0.0, 0.5]}))
    out = tmp_path / "report"
    write_report(grid, out, test=False)
    section = (out / "report.md").read_text().split("## Parameter importance")[1].split("\n## ")[0]
    assert "on val_acc at epoch 2." in section and "(39 shuffles)" in section and "Matter: model." in section
    # model beat all 39 shuffles (p 1/40), which Holm over 2 factors doubles
    assert re.search(r"\| model \| \d\.\d{3} \| \d\.\d{3} \| 0\.025 \| 0\.050 \| \*\*yes\*\* \|", section), section
    assert re.search(r"\| dropout \| \d\.\d{3} \| \d\.\d{3} \| \d\.\d{3} \| \d\.\d{3} \| no \|", section), section
    assert (out / "figures" / "importance.png").stat().st_size > 1000


def test_parameter_importance_of_a_sampled_search(tmp_path):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    trials = []
    for i in range(30):
        lr, dropout = float(10 ** rng.uniform(-4, -2)), float(rng.uniform(0, 0.5))
        acc = 0.9 - 0.15 * abs(math.log10(lr) + 3) + 0.002 * dropout
        trials.append({"values": {"lr": lr, "dropout": dropout}, "seed": 0, "acc": [acc - 0.1, acc]})
    exp = load_experiment(write_run(tmp_path / "sampled", design="sample", epochs=2, seeds=[0], trials=trials,
                                    factors={"lr": ("loguniform", [1e-4, 1e-2]), "dropout": ("uniform", [0.0, 0.5])}))
    scores = parameter_importance(exp)
    assert list(scores.index) == ["lr", "dropout"] and scores["lr"] > 0.8
    assert scores.sum() == pytest.approx(1.0)
    assert level_key(1.0) == level_key(1) == "1" and level_key(True) == "true" != level_key(1)


def test_learning_curves_have_whole_epoch_ticks(tmp_path):
    from cnnsearch.plots import plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": 0.1 * e, "val_acc": 0.1 * e}
               for e in (1, 2, 3)]
    fig = plot_curves(history, tmp_path / "curves.png", title="resnet18 on image folder /a/rather/long/path/to/images")
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


# ------------------------------------------------------------------ files from a results folder
class _Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint planted in a shared folder does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_payload(checkpoint: Path, marker: Path) -> None:
    import torch

    torch.save({"format": 1, "epoch": 1, "history": [], "model": _Payload(marker)}, checkpoint)


def test_planted_checkpoint_runs_no_code_through_any_command(tiny_run, data_root, tmp_path):
    """`analysis report`, `analysis best` and `cnnsearch.train --resume` open checkpoints from folders
    users share; a planted pickle payload is refused with one line naming the file, and never runs."""
    run = tmp_path / "shared_run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "code_ran"
    planted = sorted(run.glob("*/seed-*/checkpoint_*/state.pt"))
    assert planted, "the tiny run keeps checkpoints"
    for path in planted:
        plant_payload(path, marker)
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root)}
    commands = {
        "report": [sys.executable, "-m", "analysis", "report", str(run), "--out", str(tmp_path / "report"),
                   "--no-download"],
        "best": [sys.executable, "-m", "analysis", "best", str(run), "--no-download", "--device", "cpu"],
    }
    train_out = tmp_path / "train"
    train_out.mkdir()
    (train_out / "config.json").write_text("{}")
    plant_payload(train_out / "checkpoint.pt", marker)
    commands["train --resume"] = [sys.executable, "-m", "cnnsearch.train", "--arch", "lenet5", "--dataset", "mnist",
                                  "--device", "cpu", "--no-download", "--out", str(train_out), "--resume", "--quiet"]
    for name, command in commands.items():
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert not marker.exists(), f"{name} ran code from a planted checkpoint"
        assert "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])
        refusals = [line for line in proc.stderr.splitlines() if "refusing to load" in line]
        if name == "report":  # the report is written; the trial whose checkpoint is refused is named
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert refusals and "posix.system" in refusals[0] and "state.pt" in refusals[0]
            assert (tmp_path / "report" / "report.md").exists()
        else:
            assert proc.returncode == 2, (name, proc.stderr[-2000:])
            assert len(proc.stderr.strip().splitlines()) == 1 and refusals, (name, proc.stderr)
            assert "posix.system" in refusals[0]
