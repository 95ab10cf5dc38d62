"""ASHA economy: epochs trained and the best config picked, ASHA runs against one FIFO run.

    python -m tune.run --space ablation --budget cpu --scheduler fifo --name abl-fifo
    python -m tune.run --space ablation --budget cpu --name abl-asha
    python -m tune.run --space ablation --budget cpu --grace-period 1 --name abl-asha-g1
    python bench/asha_economy.py runs/abl-fifo runs/abl-asha runs/abl-asha-g1

Each argument is an experiment folder or a published report folder (`python -m analysis report --out`),
whose `trials.csv` holds the same per-trial table. Epochs trained come from the results, so the figure does
not depend on the machine. The best config is the design point with the highest mean validation accuracy
over seeds, each trial at its best epoch (what a user of that run would pick); "regret" is how much worse,
in FIFO's full-length results, ASHA's pick is than FIFO's. Goal: ASHA trains at most 40% of FIFO's epochs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis import load_experiment


def trials_table(path: str) -> pd.DataFrame:
    published = Path(path) / "trials.csv"
    return pd.read_csv(published) if published.is_file() else load_experiment(path).trials


def summary(trials: pd.DataFrame) -> dict:
    by_point = trials.groupby("label")["best_val_acc"].mean()
    return {"trials": len(trials), "epochs": int(trials["epochs"].sum()), "planned": int(trials["max_epochs"].sum()),
            "hours": float(trials["wall_time_s"].sum() / 3600), "by_point": by_point, "best": str(by_point.idxmax())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fifo", help="the FIFO run: every trial to the last epoch")
    p.add_argument("asha", nargs="+", help="one or more ASHA runs of the same space and budget")
    args = p.parse_args()
    fifo = summary(trials_table(args.fifo))
    fifo_acc = fifo["by_point"]
    print(f"fifo {args.fifo}: {fifo['trials']} trials, {fifo['epochs']} epochs, {fifo['hours']:.2f} trial-hours; "
          f"best point {fifo['best']} ({100 * fifo_acc[fifo['best']]:.2f}%)")
    print("ranking by FIFO: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in fifo_acc.sort_values(ascending=False).items()))
    for path in args.asha:
        run = summary(trials_table(path))
        regret = 100 * (fifo_acc[fifo["best"]] - fifo_acc[run["best"]])
        print(f"asha {path}: {run['trials']} trials, {run['epochs']} of {run['planned']} epochs "
              f"({run['epochs'] / fifo['epochs']:.1%} of FIFO's, goal <= 40%), trial-hours ratio "
              f"{run['hours'] / fifo['hours']:.3f}; best point {run['best']} "
              f"(same as FIFO: {run['best'] == fifo['best']}; regret in FIFO's results {regret:.2f} points)")


if __name__ == "__main__":
    main()
