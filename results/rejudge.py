"""Re-judge every published result under results/ with the current analysis: `python results/rejudge.py`.

ablation-full-fifo, ablation-cpu-fifo-base4 and ablation-cpu-adaptive keep their experiment folders (run/, JSON
only). The three older results kept only their report outputs; their folders are rebuilt from trials.csv and epochs.csv into run/ (analysis.rebuild) with the record
their report stated, once. Then each report is written again with `--no-test`: no checkpoint is kept, so the
test-split paragraph of the report made on the machine that ran it is carried over (and its confusion.png kept).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path("results")  # relative to the repository root, so that reports name their folders so
sys.path.insert(0, str(REPO))

from analysis import load_experiment, write_report  # noqa: E402  (after the path)
from analysis.rebuild import rebuild_run  # noqa: E402
from search_spaces import load_space  # noqa: E402
from search_spaces.plan import Plan  # noqa: E402

# The records the old reports stated (their experiment folders, under /work/runs, are gone).
REBUILT = {
    "ablation-cpu-fifo": dict(
        space="ablation", budget="cpu", scheduler="fifo", settings={}, dataset=None, created="2026-11-26T09:50:53+0000",
        command="python -m tune.run --space ablation --budget cpu --scheduler fifo --storage /work/runs "
                "--name ablation-cpu-fifo --no-dashboard"),
    "ablation-cpu": dict(
        space="ablation", budget="cpu", scheduler="asha", settings={"grace_period": 2, "reduction_factor": 3},
        dataset=None, created="2026-11-26T10:37:52+0000",
        command="python -m tune.run --space ablation --budget cpu --storage /work/runs --name ablation-cpu-asha "
                "--no-dashboard"),
    "optimizers-mnist-smoke": dict(
        space="optimizers", budget="smoke", scheduler="asha", settings={"grace_period": 1, "reduction_factor": 2},
        dataset="mnist", created="2026-11-23T20:07:01+0000",
        command="python -m tune.run --space optimizers --budget smoke --dataset mnist --storage /work/runs "
                "--name optimizers-mnist-smoke --no-dashboard --data-dir .data --no-download"),
}
NO_TEST = "Test split not evaluated (`--no-test`): no confusion matrix."
KEPT = " (Evaluated when the run was made; the checkpoint is not kept under results/.)"


def rebuild(name: str) -> None:
    how = REBUILT[name]
    plan = Plan(load_space(how["space"]), how["budget"], scheduler=how["scheduler"], settings=how["settings"],
                dataset=how["dataset"])
    record = plan.record(resources={"cpu": 1.0, "gpu": 0.0}, command=how["command"], created=how["created"])
    # As run then: every point at the space's seeds (the base point's extra seeds came later).
    record = dataclasses.replace(record, base_seeds=(), num_trials=plan.space.num_points * len(plan.seeds))
    rebuild_run(RESULTS / name, record, RESULTS / name / "run")
    (RESULTS / name / "run" / "REBUILT.md").write_text(
        f"Rebuilt by `python results/rejudge.py` from ../trials.csv and ../epochs.csv (analysis/rebuild.py): the "
        f"original experiment folder is gone. No checkpoints, no Tune state.\n")


def rejudge(name: str) -> Path:
    folder = RESULTS / name
    old = (folder / "report.md").read_text() if (folder / "report.md").exists() else ""
    test = re.search(r"^Test split \(.*$", old, flags=re.M)
    if not (folder / "run").exists():
        rebuild(name)
    path = write_report(load_experiment(folder / "run"), folder, test=False)
    if test:
        text = path.read_text().replace(NO_TEST, test.group(0).replace(KEPT, "") + KEPT + "\n\n"
                                        "![confusion matrix on the test split](figures/confusion.png)")
        path.write_text(text)
    return path


if __name__ == "__main__":
    os.chdir(REPO)
    for name in ("ablation-full-fifo", "ablation-cpu-fifo-base4", "ablation-cpu-adaptive", *REBUILT):
        print(f"wrote {rejudge(name)}")
