"""A trial's report from its seeds' records (search_spaces/seeds.py), Ray-free, on planted rows: the seeds'
mean and standard error at each epoch (a seed that stopped earlier counts with its last epoch), and the best
epoch by that mean read back from the records after the run."""
from __future__ import annotations

import json
import math

import pytest
from pyarrow import fs

from cnnsearch.engine import save_checkpoint
from search_spaces.seeds import SeedRecord, seed_means, summarize


def _row(epoch: int, acc: float, loss: float, status: str = "running") -> dict:
    return {"epoch": epoch, "train_loss": loss + 0.1, "train_acc": acc - 0.05, "val_loss": loss, "val_acc": acc,
            "lr": 0.1, "epoch_time_s": 1.0, "images_per_s": 100.0, "status": status}


def test_summarize_averages_the_seeds_and_keeps_a_stopped_seeds_last_epoch():
    seeds = {3: [_row(1, 0.30, 2.0), _row(2, 0.50, 1.5, "completed")], 7: [_row(1, 0.20, 2.5, "diverged")]}
    first, second = summarize(seeds, 1), summarize(seeds, 2)
    assert first["val_acc"] == pytest.approx(0.25) and first["status"] == "running" and first["seeds"] == 2
    assert second["val_acc"] == pytest.approx(0.35) and second["val_loss"] == pytest.approx(2.0)
    assert second["val_acc_se"] == pytest.approx(math.sqrt(((0.15 ** 2) * 2 / 1) / 2))  # sd / sqrt(n), n - 1 in sd
    assert second["status"] == "completed" and second["diverged"] == 1 and second["images_per_s"] == 200.0
    assert second["per_seed"] == {str(seed): {k: rows[-1][k] for k in ("train_loss", "train_acc", "val_loss",
                                                                       "val_acc", "status")}
                                  for seed, rows in seeds.items()}
    assert math.isnan(summarize({3: seeds[3]}, 2)["val_acc_se"])  # one seed: no spread to measure


def _plant(folder, seed: int, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"seed": seed, "model": "basecnn"}))
    (folder / "result.json").write_text("".join(json.dumps({**r, "seed": seed}) + "\n" for r in rows) + '{"epoch": 9, ')


@pytest.mark.parametrize("metric, mode, value, epoch", [("val_acc", "max", 0.45, 2), ("val_loss", "min", 1.5, 2)])
def test_seed_means_finds_the_best_epoch_of_the_seeds_mean(tmp_path, metric, mode, value, epoch):
    trial = tmp_path / "w1-000_base_s2+10"
    _plant(trial / "seed-10", 10, [_row(1, 0.30, 2.0), _row(2, 0.50, 1.2), _row(3, 0.30, 2.2, "completed")])
    _plant(trial / "seed-2", 2, [_row(1, 0.20, 2.2), _row(2, 0.40, 1.8), _row(3, 0.36, 1.9, "completed")])
    (trial / "seed-x").mkdir()  # not a seed's folder
    found = seed_means(fs.LocalFileSystem(), str(trial), metric, mode)
    assert found["value"] == pytest.approx(value) and found["epoch"] == epoch and found["epochs"] == 3
    assert found["last"] == pytest.approx({"val_acc": 0.33, "val_loss": 2.05}[metric])
    assert found["params"]["seed"] == 2  # the first seed by number (seed-10 sorts first as text)
    assert seed_means(fs.LocalFileSystem(), str(tmp_path / "none"), metric, mode) is None
    (tmp_path / "empty" / "seed-0").mkdir(parents=True)
    assert seed_means(fs.LocalFileSystem(), str(tmp_path / "empty"), metric, mode) is None


def test_a_record_killed_between_checkpoint_and_result_line_reads_back_whole(tmp_path):
    """A kill after an epoch's checkpoint but before its result.json line: the row read back from the checkpoint
    names its checkpoint as an uninterrupted run's row does (the resume tests compare them)."""
    folder = tmp_path / "w1-000_base_s0" / "seed-0"
    history = [_row(1, 0.2, 2.0), _row(2, 0.3, 1.8)]
    for epoch in (1, 2):
        (folder / f"checkpoint_{epoch:06d}").mkdir(parents=True)
        save_checkpoint({"format": 1, "epoch": epoch, "history": history[:epoch]}, folder / f"checkpoint_{epoch:06d}" / "state.pt")
    (folder / "result.json").write_text(json.dumps({**history[0], "checkpoint_dir_name": "checkpoint_000001",
                                                    "time_total_s": 5.0, "seed": 0}) + "\n")
    record = SeedRecord(fs.LocalFileSystem(), str(folder), {"seed": 0}, "val_acc", "max", started_at=0.0)
    assert record.epoch == 2 and not record.finished
    assert [r["checkpoint_dir_name"] for r in record.rows] == ["checkpoint_000001", "checkpoint_000002"]
    assert record.rows[0]["time_total_s"] == 5.0 and record.rows[1]["val_acc"] == 0.3
