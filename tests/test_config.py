"""TrainConfig validation: every bad value is a ValueError with a message that says what is allowed."""
from __future__ import annotations

import pytest

from cnnsearch.config import LR_SCHEDULES, OPTIMIZERS, TrainConfig


def test_defaults_are_report_e_baseline():
    c = TrainConfig()
    assert (c.model, c.optimizer, c.lr, c.batch_size, c.epochs) == ("resnet18", "adam", 1e-3, 512, 30)
    assert (c.lr_schedule, c.lr_decay) == ("exponential", 0.9)


def test_round_trip_through_dict():
    c = TrainConfig(model="resnet18", blocks_per_stage=[3, 3, 3, 3], dropout=0.4, stem_kernel=7)
    assert c.blocks_per_stage == (3, 3, 3, 3)
    d = c.to_dict()
    assert d["blocks_per_stage"] == [3, 3, 3, 3]
    assert TrainConfig.from_dict(d) == c


def test_model_options_only_those_set():
    assert TrainConfig(model="basecnn").model_options() == {}
    assert TrainConfig(stem_kernel=7, stem_bn=False).model_options() == {"stem_kernel": 7, "stem_bn": False}


def test_unknown_key_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) lerning_rate.*known keys:.*lr"):
        TrainConfig.from_dict({"lerning_rate": 0.1})


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of " + ", ".join(OPTIMIZERS)),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of " + ", ".join(LR_SCHEDULES)),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"train_subset": 0}, "train_subset must be a positive number"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"dataset": "svhn"}, "dataset must be one of cifar10, cifar100, mnist, imagefolder:PATH"),
    ({"dataset": "imagefolder:"}, "dataset must be one of"),
    ({"model": "resnet19"}, "resnet18"),  # unknown model: the message lists the known names
    ({"stem_kernel": 5}, "stem_kernel"),
    ({"dropout": 1.2}, "dropout"),
    ({"blocks_per_stage": (2, 2, 2)}, "blocks_per_stage"),
    ({"width": 0.0}, "width"),
    ({"model": "basecnn", "stem_kernel": 7}, "stem_kernel"),  # an option the family does not take
])
def test_bad_values_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().lr = 0.1  # type: ignore[misc]
