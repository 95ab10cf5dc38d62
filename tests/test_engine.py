"""The training engine on real data: it learns, logs what it says, resumes exactly, survives divergence."""
from __future__ import annotations

import math

import pytest
import torch

from cnnsearch.config import OPTIMIZERS, TrainConfig
from cnnsearch.engine import evaluate, fit, load_checkpoint, save_checkpoint

# Small real runs: 20 training images per class, 200 validation images.
TINY = dict(model="basecnn", dataset="cifar10", train_subset=20, val_size=200, batch_size=50, epochs=2, device="cpu")
EXACT_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "status")


def test_fit_reports_every_epoch(cifar10):
    seen = []
    result = fit(TrainConfig(**TINY), cifar10, on_epoch=lambda m, state: seen.append(m))
    assert result.status == "completed"
    assert [m["epoch"] for m in seen] == [1, 2] == [h["epoch"] for h in result.history]
    for m in seen:
        assert 0.0 <= m["train_acc"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0
        assert m["train_loss"] > 0 and m["val_loss"] > 0
        assert m["epoch_time_s"] > 0 and m["images_per_s"] > 0
    assert [m["status"] for m in seen] == ["running", "completed"]
    assert result.best["val_acc"] == max(m["val_acc"] for m in seen)


def test_fit_learns_mnist(mnist):
    """LeNet-5 on 1,000 real MNIST images for 3 epochs must beat chance (10%) by far."""
    config = TrainConfig(model="lenet5", dataset="mnist", train_subset=100, val_size=1000, batch_size=32,
                         epochs=3, lr_schedule="none", device="cpu")
    result = fit(config, mnist)
    assert result.history[-1]["val_acc"] > 0.75
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("schedule, expected", [
    ("none", [1e-2, 1e-2, 1e-2, 1e-2]),
    ("exponential", [1e-2, 5e-3, 2.5e-3, 1.25e-3]),
    ("step", [1e-2, 1e-2, 5e-3, 5e-3]),
])
def test_lr_schedule_per_epoch(cifar10, schedule, expected):
    config = TrainConfig(**{**TINY, "epochs": 4, "train_subset": 5, "lr": 1e-2, "lr_schedule": schedule,
                            "lr_decay": 0.5, "step_size": 2})
    lrs = [h["lr"] for h in fit(config, cifar10).history]
    assert lrs == pytest.approx(expected)


def test_cosine_schedule_anneals_towards_zero(cifar10):
    config = TrainConfig(**{**TINY, "epochs": 4, "train_subset": 5, "lr": 1e-2, "lr_schedule": "cosine"})
    lrs = [h["lr"] for h in fit(config, cifar10).history]
    assert lrs[0] == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 5e-3


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(cifar10, optimizer):
    config = TrainConfig(**{**TINY, "epochs": 1, "optimizer": optimizer, "lr": 1e-3})
    result = fit(config, cifar10)
    assert result.status == "completed" and math.isfinite(result.history[0]["train_loss"])


class Interrupted(Exception):
    pass


def test_resume_matches_uninterrupted_run(cifar10, tmp_path):
    """Kill after epoch 2 of 4 (checkpoint saved), resume: the metrics equal an uninterrupted run's
    exactly. Dropout and augmentation are on, so every RNG has to be restored."""
    config = TrainConfig(**{**TINY, "epochs": 4, "dropout": 0.5, "augment": True})
    full = fit(config, cifar10).history
    path = tmp_path / "ckpt.pt"

    def stop_after_two(metrics, state):
        state.save(path)
        if metrics["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(config, cifar10, on_epoch=stop_after_two)
    assert load_checkpoint(path)["epoch"] == 2
    resumed = fit(config, cifar10, checkpoint=path).history
    assert [{k: h[k] for k in EXACT_KEYS} for h in resumed] == [{k: h[k] for k in EXACT_KEYS} for h in full]


def test_resume_rejects_other_config(cifar10, tmp_path):
    path = tmp_path / "ckpt.pt"
    fit(TrainConfig(**{**TINY, "epochs": 1}), cifar10, on_epoch=lambda m, s: s.save(path))
    with pytest.raises(ValueError, match="different config.*lr"):
        fit(TrainConfig(**{**TINY, "lr": 0.5}), cifar10, checkpoint=path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"format": 1}, path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_divergence_ends_run_without_raising(cifar10):
    config = TrainConfig(**{**TINY, "epochs": 3, "optimizer": "sgd", "lr": 1e8, "lr_schedule": "none"})
    result = fit(config, cifar10)
    assert result.status == "diverged"
    assert len(result.history) < 3 or result.history[-1]["status"] == "diverged"
    assert result.history[-1]["status"] == "diverged"
    assert not math.isfinite(result.history[-1]["train_loss"]) or not math.isfinite(result.history[-1]["val_loss"])


def test_evaluate_confusion_is_consistent(cifar10):
    result = fit(TrainConfig(**{**TINY, "epochs": 1}), cifar10)
    model = result.model
    model.train()
    subset = cifar10.test.__class__(cifar10.test.images[:300], cifar10.test.labels[:300])
    ev = evaluate(model, subset, batch_size=128, num_classes=10)
    assert model.training  # mode restored
    assert ev.confusion.shape == (10, 10) and int(ev.confusion.sum()) == 300
    assert ev.accuracy == pytest.approx(ev.confusion.diag().sum().item() / 300)
    row = ev.confusion.sum(1)
    for k in range(10):
        if row[k] > 0:
            assert ev.per_class_accuracy[k] == pytest.approx(ev.confusion[k, k].item() / row[k].item())
    with torch.no_grad():
        model.eval()
        direct = (model(subset.images).argmax(1) == subset.labels).float().mean().item()
    assert ev.accuracy == pytest.approx(direct)


def test_compiled_model_trains_like_eager(mnist):
    """torch.compile (inductor, on the CPU here) must not change what is learned: losses within 1e-4 relative,
    the same accuracies. 200 images at batch 64 end each epoch with a partial batch of 8, which trains on the
    uncompiled network, so the compiled one sees a single shape and is compiled once. About 40 s."""
    import torch._dynamo

    config = TrainConfig(model="lenet5", dataset="mnist", train_subset=20, val_size=200, batch_size=64, epochs=2,
                         lr_schedule="none", device="cpu")
    eager = fit(config, mnist).history
    torch._dynamo.reset()
    compiled = fit(config.replace(compile=True), mnist).history
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompiling for the partial batch
    for a, b in zip(eager, compiled, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["val_acc"] == a["val_acc"]
