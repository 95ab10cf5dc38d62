"""`analysis`: loading experiments, effects at equal epoch, bootstrap intervals, claims and verdicts,
the `report` and `best` CLIs and the notebook.

One tiny real experiment (tests/data/analysis_space.yaml: 6 Base CNN trials on real CIFAR-10 under
ASHA) backs the loading, CLI and notebook tests; the statistics and verdict logic run on experiment
folders fabricated here with known effects, written in the same format tune.run writes.
"""
from __future__ import annotations

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
    verdicts_table,
)
from analysis.__main__ import main
from analysis.claims import CLAIMS_DIR
from analysis.load import SkippedTrialWarning
from analysis.stats import bootstrap_diff, bootstrap_mean
from search_spaces import level_key

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "tests" / "data" / "analysis_space.yaml"
TRIALS, MAX_EPOCHS = 6, 3  # 3 points (base, dropout=0.5, lr_decay=0.45) x 2 seeds


# ------------------------------------------------------------------------------ the tiny real run
@pytest.fixture(scope="module")
def tiny_run(data_root, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("analysis_runs")
    env = {**os.environ, "CNNSEARCH_DATA_DIR": str(data_root)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tune.run", "--space", str(SPACE), "--budget", "smoke", "--no-dashboard",
                           "--no-download", "--storage", str(storage), "--name", "tiny"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"tiny tune run: {time.perf_counter() - start:.0f}s")
    return storage / "tiny"


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
    return {p.parent.name: sum(1 for line in p.read_text().splitlines() if line.strip())
            for p in run.glob("*/result.json")}


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
    folders = sorted(p.parent for p in run.glob("*/result.json"))
    truncated, orphan = folders[0], folders[1]
    text = (truncated / "result.json").read_text()
    (truncated / "result.json").write_text(text[: len(text) - 40])  # cut inside the last JSON line
    (orphan / "params.json").unlink()
    with pytest.warns(SkippedTrialWarning) as caught:
        exp = load_experiment(run)
    messages = " | ".join(str(w.message) for w in caught)
    assert truncated.name in messages and "not JSON" in messages
    assert orphan.name in messages and "params.json" in messages
    assert len(exp.trials) == TRIALS - 2 and {truncated.name, orphan.name}.isdisjoint(exp.trials["folder"])
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
                 "--data-dir", str(data_root), "--no-download", "--resamples", "2000"])
    assert code == 0
    assert str(out / "report.md") in capsys.readouterr().out
    report = (out / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", report, flags=re.M)
    assert sections[0] == "Claims", sections  # claims first
    assert sections[1:3] == ["Factor: dropout", "Factor: lr_decay"]
    assert sections[-1] == "Cost"
    claims_table = report.split("## Claims")[1].split("\n## ")[0]
    rows = [line for line in claims_table.splitlines() if line.startswith("| **")]
    assert len(rows) == 3
    assert "report's value" in claims_table and "60.00" in claims_table
    assert "**not tested**" in rows[2] and "stem_kernel" in rows[2]
    for row in rows[:2]:
        assert re.search(r"\*\*(reproduced|contradicted|inconclusive)\*\*", row)
        assert re.search(r"@ epoch \d", row)
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
    assert main(["report", tiny_run.resolve().as_uri(), "--out", str(out), "--no-test", "--resamples", "500"]) == 0
    report = (out / "report.md").read_text()
    assert not (out / "figures" / "confusion.png").exists()
    assert "Test split not evaluated (`--no-test`)" in report
    assert "No claims file for space `analysis_space`" in report  # no shipped claims for this space


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


# ------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_separated_groups_exclude_zero():
    a, b = [0.80, 0.82, 0.79, 0.81], [0.70, 0.71, 0.69, 0.72]
    est = bootstrap_diff(a, b)
    assert est.value == pytest.approx(0.10, abs=1e-9)
    assert 0 < est.low < est.value < est.high and est.sign() == 1
    assert bootstrap_diff(b, a).sign() == -1


def test_bootstrap_identical_groups_include_zero_and_is_deterministic():
    a = [0.1, 0.3, 0.2, 0.4]
    est = bootstrap_diff(a, list(a))
    assert est.low < 0 < est.high and est.sign() == 0
    assert bootstrap_diff(a, [0.2, 0.25, 0.35]) == bootstrap_diff(a, [0.2, 0.25, 0.35])
    assert bootstrap_diff(a, [0.2, 0.25, 0.35], seed=1) != bootstrap_diff(a, [0.2, 0.25, 0.35], seed=2)


def test_bootstrap_one_seed_is_undefined():
    est = bootstrap_diff([0.9], [0.1, 0.2])
    assert est.value == pytest.approx(0.75) and not est.defined and est.sign() == 0
    assert not bootstrap_mean([0.5]).defined


def test_bootstrap_coverage():
    """Same distribution: the 95% interval excludes 0 in about 5% of data sets (percentile bootstraps
    run a little hot with 10 per group); a shift of 1.5 sd is found nearly always."""
    rng = np.random.default_rng(123)
    null = [bootstrap_diff(rng.normal(0, 1, 10), rng.normal(0, 1, 10), n_resamples=1000).sign() != 0
            for _ in range(200)]
    shifted = [bootstrap_diff(rng.normal(1.5, 1, 10), rng.normal(0, 1, 10), n_resamples=1000).sign() == 1
               for _ in range(100)]
    assert np.mean(null) < 0.12
    assert np.mean(shifted) > 0.85


def test_bootstrap_cells_keep_the_mix():
    """A marginal mean over two very different cells: resampling within cells keeps the interval on
    the level effect (+0.02), where pooling the cells would swamp it."""
    a = [np.array([0.52, 0.51, 0.53]), np.array([0.92, 0.91, 0.93])]
    b = [np.array([0.50, 0.49, 0.51]), np.array([0.90, 0.89, 0.91])]
    assert bootstrap_diff(a, b).sign() == 1
    assert bootstrap_diff(np.concatenate(a), np.concatenate(b)).sign() == 0


# --------------------------------------------------------------------- fabricated experiments
BASE = {"model": "basecnn", "dataset": "cifar10", "optimizer": "adam", "lr": 0.001, "dropout": 0.0}


def write_run(root: Path, *, design: str, factors: dict[str, list], trials: list[dict], epochs: int = 4,
              seeds: list[int] = (0, 1, 2), scheduler: str = "asha") -> Path:
    """An experiment folder as tune.run writes one. trials: {"values": {factor: level}, "seed", "acc": [...
    val acc per epoch], "status" (default: completed if it ran every epoch, else running)}."""
    root.mkdir(parents=True)
    spec = [{"name": n, "levels": lv, "distribution": None} if isinstance(lv, list) else
            {"name": n, "levels": None, "distribution": lv} for n, lv in factors.items()]
    state = {"space": {"name": "fake", "design": design, "metric": "val_acc", "mode": "max", "seeds": list(seeds),
                       "base": {**BASE, "epochs": epochs}, "factors": spec, "points": None},
             "budget": "smoke", "epochs": epochs, "scheduler": scheduler, "search": "grid", "grace_period": 1,
             "reduction_factor": 2, "num_trials": len(trials), "dataset": "cifar10", "resources": {"cpu": 1, "gpu": 0}}
    (root / "cnnsearch.json").write_text(json.dumps(state))
    for i, t in enumerate(trials):
        trial_id = f"fake_{i:05d}"
        params = {**BASE, "epochs": epochs, "seed": t["seed"]}
        if design == "one_at_a_time":
            (factor, level), = t["values"].items() or [(None, None)]
            params["design_point"] = {"label": f"{factor}={level}" if factor else "base", "factor": factor, "level": level}
        else:
            params.update(t["values"])
        folder = root / f"t{i}_{trial_id}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params))
        rows = []
        for e, acc in enumerate(t["acc"], start=1):
            last = e == len(t["acc"])
            status = t.get("status", "completed" if e == epochs else "running") if last else "running"
            rows.append({"epoch": e, "val_acc": acc, "val_loss": 2 * (1 - acc), "train_acc": acc, "train_loss": 1 - acc,
                         "status": status, "time_total_s": 10.0 * e, "epoch_time_s": 10.0, "trial_id": trial_id})
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


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


@pytest.fixture
def grid(tmp_path):
    """2 models x 2 dropouts, 3 seeds, 2 epochs: the models differ hugely, dropout 0.5 adds 0.02 everywhere."""
    trials = []
    for model, level in (("basecnn", 0.5), ("resnet18", 0.9)):
        for dropout, bonus in ((0.0, 0.0), (0.5, 0.02)):
            for s, n in enumerate([0.0, 0.005, -0.005]):
                acc = level + bonus + n
                trials.append({"values": {"model": model, "dropout": dropout}, "seed": s, "acc": [acc - 0.1, acc]})
    return load_experiment(write_run(tmp_path / "grid", design="grid", epochs=2,
                                     factors={"model": ["basecnn", "resnet18"], "dropout": [0.0, 0.5]}, trials=trials))


def test_compare_uses_the_largest_epoch_both_levels_reached(asha_oat):
    c = compare(asha_oat, "dropout", 0.5, 0.0)
    assert c.epoch == 2 and (c.n_a, c.n_b) == (3, 3)
    assert c.diff.value == pytest.approx(0.05) and c.better == 1  # at the last epoch the base would win
    assert asha_oat.trials.set_index("label").loc["dropout=0.5", "stopped_early"].all()
    table = level_effects(asha_oat, "dropout")
    assert table["level"].tolist() == ["0", "0.5"] and table["epoch"].tolist() == [4, 2]
    assert table.set_index("level").loc["0.5", "rank"] == 1 and table.set_index("level").loc["0.5", "diff_low"] > 0
    # The lr factor: compared over the base's and its own four epochs; no effect to find.
    lr = compare(asha_oat, "lr", 0.01, 0.001)
    assert lr.epoch == 4 and lr.better == 0


def test_grid_marginal_means_at_one_epoch(grid):
    table = effects(grid)
    assert set(table["factor"]) == {"model", "dropout"} and set(table["epoch"]) == {2}
    dropout = table[table["factor"] == "dropout"].set_index("level")
    assert dropout.loc["0.5", "diff"] == pytest.approx(0.02) and dropout.loc["0.5", "diff_low"] > 0
    assert dropout.loc["0.5", "n"] == 6 and dropout.loc["0.5", "rank"] == 1


def write_claims(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    return path


def test_verdicts(asha_oat, grid, tmp_path):
    oat = check_claims(asha_oat, load_claims(write_claims(tmp_path, """
claims:
  - dropout: [0.5, 0.0]          # right at equal epoch
  - dropout: [0.0, 0.5]          # what last values would suggest
  - lr: [0.001, 0.01]            # no effect
  - stem_kernel: [3, 7]          # not varied here
""")))
    assert [v.verdict for v in oat] == ["reproduced", "contradicted", "inconclusive", "not tested"]
    assert "reversed" in oat[1].note and "includes 0" in oat[2].note
    # dropout=0.5 was stopped at epoch 2 of 4: the verdict says so; lr was judged at the last epoch.
    assert "judged at epoch 2 of 4" in oat[0].note and "judged at epoch 2 of 4" in oat[1].note
    assert "judged at" not in oat[2].note
    table = verdicts_table(oat)
    assert table["verdict"].tolist() == [v.verdict for v in oat]
    assert "@ epoch 2" in table.loc[0, "measured"]

    on_grid = check_claims(grid, load_claims(write_claims(tmp_path, """
claims:
  - dropout: [0.5, 0.0]
    where: {model: resnet18}
    reported: {0.5: 91, 0.0: 90}
  - model: [resnet18, basecnn]
  - model: [basecnn, resnet18]
  - model: [resnet18, basecnn]
    where: {recipe: {optimizer: adam, lr: 0.001}}   # not a factor here, but what the base ran
  - model: [resnet18, basecnn]
    where: {recipe: {optimizer: sgd, lr: 0.01}}
""")))
    assert [v.verdict for v in on_grid] == ["reproduced", "reproduced", "contradicted", "reproduced", "not tested"]
    assert (on_grid[0].comparisons[0].n_a, on_grid[0].comparisons[0].n_b) == (3, 3)  # only resnet18's trials
    assert on_grid[4].note == "the experiment ran optimizer=adam, lr=0.001; the claim is about recipe=optimizer=sgd,lr=0.01"


def test_verdict_with_one_seed_is_inconclusive(tmp_path):
    trials = [{"values": {}, "seed": 0, "acc": [0.3, 0.4]}, {"values": {"dropout": 0.5}, "seed": 0, "acc": [0.6, 0.9]}]
    exp = load_experiment(write_run(tmp_path / "one", design="one_at_a_time", factors={"dropout": [0.0, 0.5]},
                                    trials=trials, epochs=2, seeds=[0]))
    verdict, = check_claims(exp, load_claims(write_claims(tmp_path, "claims:\n  - dropout: [0.5, 0.0]\n")))
    assert verdict.verdict == "inconclusive" and "one seed" in verdict.note
    assert verdict.comparisons[0].diff.value == pytest.approx(0.5)


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


@pytest.mark.parametrize("text, message", [
    ("claims:\n  - dropout: [0.0]\n", "two or more levels"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    lr: [0.1, 0.2]\n", "exactly one factor"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    reported: [1, 2, 3]\n", "one value per level"),
    ("claims:\n  - dropout: [0.0, 0.5]\n    reported: {0.7: 1}\n", "0.7 are not in the claim's order"),
    ("claim: []\n", "expected a mapping with a `claims` list"),
    ("claims: [\n", "not valid YAML"),
])
def test_malformed_claims_files(tmp_path, text, message):
    with pytest.raises(ClaimsError) as exc:
        load_claims(write_claims(tmp_path, text))
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("path", sorted(CLAIMS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_claims_fit_their_space(path):
    from search_spaces import load_space

    claims = load_claims(path)
    assert claims.space == path.stem and len(claims) >= 3
    factors = {f.name: f for f in load_space(path.stem).factors}
    for claim in claims:
        assert claim.source in "ABCDE" and claim.statement and all(v is not None for v in claim.reported)
        levels = list(factors[claim.factor].by_key())
        assert set(claim.order) <= set(levels), (claim.key, claim.order, levels)
        for name, level in claim.where.items():
            assert level in factors[name].by_key()
    assert {path.stem for path in CLAIMS_DIR.glob("*.yaml")} == {"ablation", "architectures", "optimizers"}


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
    planted = sorted(run.glob("*/checkpoint_*/state.pt"))
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
