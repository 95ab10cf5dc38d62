"""ASHA economy: epochs trained and the best config picked, ASHA against FIFO, from two experiment folders.

    python -m tune.run --space ablation --budget cpu --scheduler asha --name abl-asha
    python -m tune.run --space ablation --budget cpu --scheduler fifo --name abl-fifo
    python bench/asha_economy.py runs/abl-asha runs/abl-fifo

Epochs trained come from the results, so the figure does not depend on the machine. The best config is
the best design point by mean validation accuracy over seeds, each trial at its best epoch (what a user
of either run would pick). Goal: ASHA trains at most 40% of FIFO's epochs.
"""
from __future__ import annotations

import argparse

from analysis import cost, load_experiment


def best_point(experiment) -> tuple[str, float]:
    """The design point with the highest mean (over seeds) best validation accuracy."""
    by_point = experiment.trials.groupby("label")[f"best_{experiment.metric}"].mean()
    return str(by_point.idxmax()), float(by_point.max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("asha")
    p.add_argument("fifo")
    args = p.parse_args()
    rows = {}
    for name, path in (("asha", args.asha), ("fifo", args.fifo)):
        experiment = load_experiment(path)
        c = cost(experiment)
        rows[name] = (c["epochs_trained"], c["epochs_planned"], c["trial_hours"], *best_point(experiment))
        print(f"{name}: {c['trials']} trials, {c['epochs_trained']} of {c['epochs_planned']} epochs trained, "
              f"{c['trial_hours']:.2f} trial-hours; best point {rows[name][3]} ({100 * rows[name][4]:.2f}%)")
    ratio = rows["asha"][0] / rows["fifo"][0]
    print(f"ASHA/FIFO epochs: {ratio:.3f} (goal <= 0.40); trial-hours ratio {rows['asha'][2] / rows['fifo'][2]:.3f}; "
          f"same best point: {rows['asha'][3] == rows['fifo'][3]}")


if __name__ == "__main__":
    main()
